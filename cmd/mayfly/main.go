// Command mayfly is the Mayfly command-line client: people and scripts use
// it to get short-lived credentials, see and revoke their leases, and ask
// the broker to explain its decisions.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
