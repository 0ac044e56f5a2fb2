// Command mayfly-sidecar keeps a workload's Mayfly credentials valid and
// hands them to it as files, environment variables or over a unix socket:
// `mayfly-sidecar run --config FILE` beside the workload, or
// `mayfly-sidecar exec --config FILE -- CMD ARGS…` around it. See package
// github.com/mayflyhq/mayfly/sdk/sidecar for the configuration.
package main

import "os"

func main() { os.Exit(run(os.Args[1:])) }
