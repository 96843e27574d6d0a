package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/persistentchat/homeserver/roomdag"
)

// workerCollector reads the workers' positions at each scrape.
type workerCollector struct {
	head    func() roomdag.StreamPos
	workers Workers
}

var (
	workerPosDesc = prometheus.NewDesc(namespace+"_worker_position",
		"Event stream position up to which the background worker has done its work.", []string{"worker", "queue"}, nil)
	workerLagDesc = prometheus.NewDesc(namespace+"_worker_lag_events",
		"Event stream positions between the newest committed event and the background worker's position.", []string{"worker", "queue"}, nil)
)

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- workerPosDesc
	ch <- workerLagDesc
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	// Positions first: a worker may pass the head read before it, never
	// one read after it.
	ps := c.workers.WorkerPositions()
	head := c.head()
	for _, p := range ps {
		ch <- prometheus.MustNewConstMetric(workerPosDesc, prometheus.GaugeValue, float64(p.Pos), p.Worker, p.Queue)
		ch <- prometheus.MustNewConstMetric(workerLagDesc, prometheus.GaugeValue, float64(max(head-p.Pos, 0)), p.Worker, p.Queue)
	}
}

// poolCollector reads the store's pool statistics at each scrape.
type poolCollector struct {
	pools Pools
}

func poolDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_db_pool_"+name, help, []string{"pool"}, nil)
}

var (
	poolMaxDesc      = poolDesc("max_connections", "Connections the pool opens at most (0: no limit).")
	poolOpenDesc     = poolDesc("open_connections", "Connections open, in use or idle.")
	poolInUseDesc    = poolDesc("in_use_connections", "Connections lent out.")
	poolIdleDesc     = poolDesc("idle_connections", "Connections waiting in the pool.")
	poolWaitsDesc    = poolDesc("waits_total", "Times a caller waited for a connection.")
	poolWaitSecsDesc = poolDesc("wait_seconds_total", "Time callers spent waiting for a connection.")
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolMaxDesc, poolOpenDesc, poolInUseDesc, poolIdleDesc, poolWaitsDesc, poolWaitSecsDesc} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.pools.Stats() {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Name)
		}
		gauge(poolMaxDesc, float64(s.MaxOpen))
		gauge(poolOpenDesc, float64(s.Open))
		gauge(poolInUseDesc, float64(s.InUse))
		gauge(poolIdleDesc, float64(s.Idle))
		ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(s.WaitCount), s.Name)
		ch <- prometheus.MustNewConstMetric(poolWaitSecsDesc, prometheus.CounterValue, s.WaitDuration.Seconds(), s.Name)
	}
}

// leaseCollector reads the lease holds at each scrape.
type leaseCollector struct {
	leases Leases
}

var leaseHeldDesc = prometheus.NewDesc(namespace+"_worker_lease_held",
	"1 while this process holds the worker lease, and so runs the workers under it; 0 while another process does (or nobody).", []string{"lease"}, nil)

func (c *leaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- leaseHeldDesc }

func (c *leaseCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.leases.LeaseHolds() {
		v := 0.0
		if h.Held {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(leaseHeldDesc, prometheus.GaugeValue, v, h.Lease)
	}
}
