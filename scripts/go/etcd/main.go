// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the version pinned in
// scripts/versions.env (ETCD_VERSION) for the test control plane (scripts/control-plane.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
