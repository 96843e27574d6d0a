module github.com/persistentchat/homeserver/conformance

go 1.26.8
