package chaos

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if IsReplica() {
		// A broker replica started by a fault case (see replica.go).
		os.Exit(ServeReplica())
	}
	flag.Parse()
	code := m.Run()
	CleanupBuild()
	if err := WriteReport(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chaos: writing the report:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
