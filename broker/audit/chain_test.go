package audit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// testChain checks the Chain contract on an empty chain: Commit seals on
// the current head, stores atomically, returns the head after; a seal
// error records nothing; concurrent commits form one gapless order; a
// checkpoint moves CheckpointSeq and CheckpointTime.
func testChain(t *testing.T, c Chain) {
	ctx := context.Background()
	if h, err := c.Head(ctx); err != nil || h != (Head{}) {
		t.Fatalf("empty head %+v, %v", h, err)
	}
	mk := func(typ Type) func(Head) (Event, error) {
		return func(h Head) (Event, error) {
			e := Event{ID: "x", Time: time.Unix(100, 0).UTC(), Type: typ}
			if typ == TypeCheckpoint { // shape only: the test verifies without a key
				e.Checkpoint = &Checkpoint{Seq: h.Seq, Hash: h.Hash, KeyID: "k", Alg: AlgEd25519}
			}
			return seal(e, h)
		}
	}
	e1, h1, err := c.Commit(ctx, mk("a.b"))
	if err != nil || e1.Seq != 1 || e1.Prev != GenesisHash || h1.Seq != 1 || h1.Hash != e1.Hash {
		t.Fatalf("first commit %+v %+v %v", e1, h1, err)
	}
	boom := errors.New("boom")
	if _, _, err := c.Commit(ctx, func(Head) (Event, error) { return Event{}, boom }); !errors.Is(err, boom) {
		t.Fatalf("seal error: %v", err)
	}
	if h, _ := c.Head(ctx); h != h1 {
		t.Fatalf("head moved after a seal error: %+v", h)
	}
	cp, h2, err := c.Commit(ctx, mk(TypeCheckpoint))
	if err != nil || h2.CheckpointSeq != 2 || !h2.CheckpointTime.Equal(cp.Time) {
		t.Fatalf("checkpoint commit %+v %v", h2, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint64]bool{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				e, _, err := c.Commit(ctx, mk("c.d"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[e.Seq] {
					t.Errorf("seq %d committed twice", e.Seq)
				}
				seen[e.Seq] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	h, err := c.Head(ctx)
	if err != nil || h.Seq != 202 || len(seen) != 200 || h.CheckpointSeq != 2 {
		t.Fatalf("after concurrent commits: head %+v, %d seqs, %v", h, len(seen), err)
	}
}

func TestChainLocal(t *testing.T) { testChain(t, &localChain{}) }

func TestChainRedis(t *testing.T) {
	rs, err := NewRedisStreamSink(redisClient(t), RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	testChain(t, rs)
	if rep := mustVerify(t, rs); !rep.OK() || rep.Last != 202 {
		t.Fatalf("stream after the contract test: %s", rep)
	}
}
