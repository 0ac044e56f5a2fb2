package testenv_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

func TestPostgres(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Password authentication over TCP: the right password connects...
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	var method string
	if err := conn.QueryRow(ctx, "SHOW password_encryption").Scan(&method); err != nil || method != "scram-sha-256" {
		t.Errorf("password_encryption = %q, %v; want scram-sha-256", method, err)
	}
	conn.Close(ctx)
	// ... and a wrong one does not.
	if c, err := pgx.Connect(ctx, pg.DSNFor(pg.User, "wrong-"+pg.Password)); err == nil {
		c.Close(ctx)
		t.Fatal("connected with a wrong password; want password authentication")
	}

	out, err := pg.Psql("CREATE TABLE t (x int); INSERT INTO t VALUES (42); SELECT x FROM t")
	if err != nil || out != "42" {
		t.Fatalf("Psql = %q, %v; want 42", out, err)
	}

	// Stop and Start keep the data and the port.
	pg.Stop()
	if c, err := pgx.Connect(ctx, pg.DSN()); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	pg.Start()
	if out, err := pg.Psql("SELECT x FROM t"); err != nil || out != "42" {
		t.Fatalf("after restart: Psql = %q, %v; want 42", out, err)
	}
	pg.Stop()
	if pgTestRunning(t, pg.Port) {
		t.Errorf("a postgres process on port %d is still running after Stop", pg.Port)
	}
}

// pgRunning reports whether any postgres process was started with port.
func pgTestRunning(t *testing.T, port int) bool {
	out, _ := exec.Command("ps", "-eo", "args").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "postgres") && strings.Contains(line, "-p "+strconv.Itoa(port)+" ") {
			return true
		}
	}
	return false
}
