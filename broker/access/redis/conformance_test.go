package redis_test

import (
	"testing"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/accesstest"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestConformance runs the access.Store suite against one Redis server;
// each subtest gets its own key prefix.
func TestConformance(t *testing.T) {
	c := client(t, testenv.Redis(t).Addr())
	accesstest.Run(t, func(t *testing.T) access.Store { return newStore(t, c, redis.Options{}) })
}

// TestConformanceOneShard runs the suite with every record in one shard,
// where the ids of one listing all come from one index.
func TestConformanceOneShard(t *testing.T) {
	c := client(t, testenv.Redis(t).Addr())
	accesstest.Run(t, func(t *testing.T) access.Store { return newStore(t, c, redis.Options{Shards: 1}) })
}

// TestCluster runs the suite, the compare-and-set races and the listing
// comparison against a real Redis Cluster of three primaries: every script
// names keys of one slot, listings merge shards across nodes.
func TestCluster(t *testing.T) {
	c := clusterClient(t, testenv.RedisCluster(t))
	t.Run("Conformance", func(t *testing.T) {
		accesstest.Run(t, func(t *testing.T) access.Store { return newStore(t, c, redis.Options{}) })
	})
	t.Run("CASRounds", func(t *testing.T) { testCASRounds(t, newStore(t, c, redis.Options{})) })
	t.Run("NoLostUpdates", func(t *testing.T) { testNoLostUpdates(t, newStore(t, c, redis.Options{})) })
	t.Run("MatchesMemory", func(t *testing.T) { testMatchesMemory(t, newStore(t, c, redis.Options{}), 1, 3) })
}
