// Command mayflyd is the Mayfly broker daemon: `mayflyd serve --config FILE`
// in production, `mayflyd dev` for a self-contained local broker.
package main

import "os"

func main() { os.Exit(run(os.Args[1:])) }
