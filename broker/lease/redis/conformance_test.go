package redis_test

import (
	"testing"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/leasetest"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestConformance runs the lease.Store suite against one Redis server;
// each subtest gets its own key prefix.
func TestConformance(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	leasetest.Run(t, func(t *testing.T) lease.Store { return newStore(t, c, redis.Options{}) })
}

// TestConformanceCluster runs the suite against a real Redis Cluster of
// three primaries.
func TestConformanceCluster(t *testing.T) {
	c := clusterClient(t, testenv.RedisCluster(t))
	leasetest.Run(t, func(t *testing.T) lease.Store { return newStore(t, c, redis.Options{}) })
}
