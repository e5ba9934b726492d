// A pod's stub resolver in miniature, Go's own (pure Go, no cgo; run with GODEBUG=netdns=go):
// LookupIPAddr for each name on the command line, as net.Dial does it (A and AAAA asked
// together), with the same output as lookup.c: NAME, "ok" or "fail", milliseconds, and the
// addresses (comma-separated) or the error; tab-separated. LOOKUP_INTERVAL_MS, when set,
// pauses that long between lookups. Standard library only: it builds offline.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	pause, _ := strconv.Atoi(os.Getenv("LOOKUP_INTERVAL_MS"))
	resolver := &net.Resolver{PreferGo: true}
	for i, name := range os.Args[1:] {
		if i > 0 && pause > 0 {
			time.Sleep(time.Duration(pause) * time.Millisecond)
		}
		start := time.Now()
		found, err := resolver.LookupIPAddr(context.Background(), name)
		took := float64(time.Since(start).Microseconds()) / 1000
		if err != nil {
			fmt.Printf("%s\tfail\t%.1f\t%v\n", name, took, err)
			continue
		}
		addresses := make([]string, 0, len(found))
		for _, a := range found {
			addresses = append(addresses, a.IP.String())
		}
		fmt.Printf("%s\tok\t%.1f\t%s\n", name, took, strings.Join(addresses, ","))
	}
}
