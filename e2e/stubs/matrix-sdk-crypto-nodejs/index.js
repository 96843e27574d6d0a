// Stand-in for @matrix-org/matrix-sdk-crypto-nodejs (see package.json):
// matrix-bot-sdk requires the module when it loads, but touches it only
// when end-to-end encryption is used. Any such use fails loudly.
"use strict";
module.exports = new Proxy(
    {},
    {
        get(_, name) {
            if (typeof name === "symbol" || name === "__esModule" || name === "then" || name === "default") return undefined;
            throw new Error(`matrix-sdk-crypto-nodejs stub: ${String(name)} is not available (end-to-end encryption is not part of this test)`);
        },
    },
);
