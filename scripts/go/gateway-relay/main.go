// Command gateway-relay copies TCP connections from one address to another:
//
//	gateway-relay LISTEN_ADDRESS:PORT TARGET_ADDRESS:PORT
//
// The test node (scripts/node.sh) runs it to make the apiserver, which listens on 127.0.0.1 only,
// reachable at the pod network's gateway for the `kubernetes` Service: kube-proxy DNATs the
// Service to an endpoint, and an endpoint may not be a loopback address (the API refuses it),
// while a packet already DNATed once (by kube-proxy, to the gateway) is never DNATed again (by the
// node's gateway rule, to 127.0.0.1). So the endpoint is the gateway and this relay listens there.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gateway-relay LISTEN_ADDRESS:PORT TARGET_ADDRESS:PORT")
		os.Exit(2)
	}
	listener, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway-relay:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "gateway-relay: relaying %s to %s\n", os.Args[1], os.Args[2])
	for {
		conn, err := listener.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "gateway-relay: accept:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go relay(conn, os.Args[2])
	}
}

// relay copies both ways until both sides have closed, passing each half-close on.
func relay(client net.Conn, target string) {
	defer client.Close()
	server, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gateway-relay: %s: %v\n", client.RemoteAddr(), err)
		return
	}
	defer server.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(server, client)
		_ = server.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(client, server)
	_ = client.(*net.TCPConn).CloseWrite()
	<-done
}
