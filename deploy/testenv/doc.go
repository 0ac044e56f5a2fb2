// Package testenv starts real services for tests and stops them again when
// the test ends, so tests run against the real thing rather than a fake
// (STYLE.md: "Tests against the real thing wherever it can run here").
//
// # Redis
//
// Redis starts one redis-server, RedisCluster a Redis Cluster of three
// primaries, RedisReplicated a primary with one replica; each on free
// loopback ports in a temporary directory:
//
//	func TestSomething(t *testing.T) {
//		srv := testenv.Redis(t) // skipped if redis-server is not installed
//		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
//		...
//		srv.Stop()  // an outage
//		srv.Start() // back on the same port, same directory
//	}
//
// They run Debian's binaries, found on PATH:
//
//	apt-get install redis-server redis-tools
//
// Without them a test that asks for Redis is skipped with a message naming
// that command, except when the environment variable CI is "true": then it
// fails, because CI must prove that the whole suite ran.
//
// Every server is started without persistence (--save "" --appendonly no)
// unless a RedisConfig asks for it, bound to 127.0.0.1 with protected mode
// off, and stopped in t.Cleanup with SIGTERM, then SIGKILL if it has not
// exited within five seconds. On Linux the servers also get SIGKILL if the
// test binary dies (parent-death signal), so nothing is left running.
package testenv
