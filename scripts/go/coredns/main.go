// Command coredns is CoreDNS (github.com/coredns/coredns at COREDNS_VERSION in scripts/versions.env)
// with only the plugins the test node's cluster DNS uses (scripts/node.sh): CoreDNS's own main
// imports every plugin, with the cloud providers' SDKs, which only lengthens a cold build. The
// order plugins run in is CoreDNS's own list (dnsserver.Directives), whichever are compiled in.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
