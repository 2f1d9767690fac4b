module stash.local/build/gateway-relay

go 1.24
