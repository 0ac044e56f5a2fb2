package memory_test

import (
	"testing"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/accesstest"
	"github.com/mayflyhq/mayfly/broker/access/memory"
)

func TestConformance(t *testing.T) {
	accesstest.Run(t, func(t *testing.T) access.Store { return memory.New() })
}
