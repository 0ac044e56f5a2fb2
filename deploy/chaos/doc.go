// Package chaos is Mayfly's fault and attack matrix, run as tests with
// figures: `make chaos` (every fault case with five random seeds, at full
// length) or, as CI does, `go test -race ./deploy/chaos/` (one seed, short
// faults). Each fault case breaks something real — it SIGKILLs a
// `mayflyd serve` process, stops Redis, kills a replica in the middle of
// a revocation batch, skews clocks, slows and drops packets on the Redis
// link — while clients issue credentials, records every credential any
// client received, and checks the promises against the lease store:
// nothing is handed out without a lease written first, and every lease
// ends on time. The attack matrix goes through the real gRPC and HTTPS
// surface of a real broker (broker/brokertest) and checks that every
// attempt is refused with the right status, and recorded where the broker
// records decisions.
//
// At the end the suite prints a table — case, runs, passes, the worst
// figure measured over the runs — and with -chaos.report=FILE writes it
// as markdown. Flags (after -args):
//
//	-chaos.runs=N   seeds per fault case (default 1 under CI=true, else 2)
//	-chaos.seed=S   one run with seed S: replays a run whose seed was printed
//	-chaos.full     full-length faults (a 30 s Redis outage, longer load)
//	-chaos.report=F write the table to F
//
// Services are real and started by the tests (deploy/testenv): Redis, and
// for case 7 a network namespace. A case whose service is missing skips,
// and fails under CI=true. MAYFLY_CHAOS_MAYFLYD names a prebuilt mayflyd
// to run instead of building cmd/mayflyd (to replay a case against a
// fix).
//
// # The harness
//
// This package is also the small library the cases are written with:
//
//   - Repeat runs a fault case once per seed as subtests and records its
//     outcome and figures under a Case (a row of the table). The case gets
//     a *Run: the subtest's T, the seed and a math/rand source seeded with
//     it (every random choice comes from it), and a Ledger.
//   - Ledger records every credential a client received; Audit checks each
//     against the lease store (lease present, not pending, jti = lease
//     id, exp not past the lease).
//   - Run.Figure, Run.Duration and Run.Count record measurements; the table
//     shows the worst (largest) over the runs, or the total for counts.
//   - Matrix runs an attack table and records how many were refused.
//   - ServeEnv builds cmd/mayflyd once and runs `mayflyd serve` processes
//     on a shared config (dev CA, JWT keys, Redis lease store); Process.Kill
//     is SIGKILL.
//   - StartReplica runs a broker replica (broker.New through brokertest,
//     with a Probe issuer and a tunable revoker) as a process of the test
//     binary, so that a case can SIGKILL one; the replica reports each
//     Revoke on stdout.
//   - Probe is an issuer.Issuer that records, on the machine's true clock,
//     every Issue, Renew and Revoke the broker makes, and can be slow.
//   - LinkProxy impairs a TCP link in user space where the kernel has no
//     tc netem.
//
// A new fault case is a TestCaseN function that calls Repeat with its
// Case and, inside, starts what it needs (StartRedis, NewServeEnv,
// StartReplica, brokertest), breaks it, and checks with the Ledger and the
// lease store, recording its figures. Cases to come — Redis data loss
// (an alert), Vault down at expiry (the overdue gauge), per-identity
// quotas, the audit sink down — slot in the same way.
package chaos
