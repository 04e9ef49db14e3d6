// A go-redis session against cache-node's RESP port, the checks of ../scenario.py:
// authentication, strings, expiry, transactions, pipelines, the key walk and both protocols.
// Exits non-zero on the first reply that differs from what Redis answers.
//
// Usage: go run . PORT PASSWORD (cache-node/tests/resp_go.rs runs it), or
// go run . moves PORT KEYS for the cluster client's scenario in cluster.go
// (cache-node/tests/resp_cluster.rs runs it).
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var ctx = context.Background()

// is stops the scenario unless the command's reply (nil for a nil reply) is want.
func is(cmd redis.Cmder, want any) {
	if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
		fail("%v: %v", cmd.Args(), err)
	}
	var got any
	if cmd.Err() == nil {
		got = reflect.ValueOf(cmd).MethodByName("Val").Call(nil)[0].Interface()
	}
	eq(fmt.Sprint(cmd.Args()), got, want)
}

// eq stops the scenario unless got equals want.
func eq(what string, got, want any) {
	if !reflect.DeepEqual(got, want) {
		fail("%s: got %#v, want %#v", what, got, want)
	}
}

// within stops the scenario unless lo <= got <= hi.
func within(what string, got, lo, hi time.Duration) {
	if got < lo || got > hi {
		fail("%s: %v is not within [%v, %v]", what, got, lo, hi)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if os.Args[1] == "moves" {
		movesArgs(os.Args[2:])
		return
	}
	port, password := os.Args[1], os.Args[2]
	// No retries: a refused command fails the scenario as it was answered.
	client := func(protocol int, password string) *redis.Client {
		return redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port, Password: password, Protocol: protocol, MaxRetries: -1})
	}

	// Authentication: refused without the token, accepted with it (user "default" implied).
	if err := client(2, "").Get(ctx, "k").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		fail("a command without AUTH: %v", err)
	}
	for _, protocol := range []int{2, 3} {
		if err := client(protocol, "wrong").Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
			fail("a wrong password over RESP%d: %v", protocol, err)
		}
	}

	r := client(3, password)
	is(r.Ping(ctx), "PONG")
	is(r.Do(ctx, "CLIENT", "SETNAME", "scenario"), "OK")
	is(r.ClientGetName(ctx), "scenario")
	is(r.Echo(ctx, "hi"), "hi")

	// Strings.
	is(r.Set(ctx, "greeting", "hello", 0), "OK")
	is(r.Get(ctx, "greeting"), "hello")
	is(r.SetNX(ctx, "greeting", "again", 0), false)
	is(r.SetXX(ctx, "missing", "x", 0), false)
	is(r.SetArgs(ctx, "greeting", "world", redis.SetArgs{Get: true}), "hello")
	is(r.GetSet(ctx, "greeting", "hi"), "world")
	is(r.Append(ctx, "greeting", "!"), int64(3))
	is(r.StrLen(ctx, "greeting"), int64(3))
	is(r.GetRange(ctx, "greeting", 0, 1), "hi")
	is(r.SetRange(ctx, "greeting", 1, "o"), int64(3))
	is(r.Get(ctx, "greeting"), "ho!")
	is(r.Incr(ctx, "counter"), int64(1))
	is(r.IncrBy(ctx, "counter", 41), int64(42))
	is(r.Decr(ctx, "counter"), int64(41))
	is(r.DecrBy(ctx, "counter", 40), int64(1))
	is(r.IncrByFloat(ctx, "float", 2.5), 2.5)
	eq("INCR of a non-number", fmt.Sprint(r.Incr(ctx, "greeting").Err()), "ERR value is not an integer or out of range")
	is(r.MSet(ctx, "a", "1", "b", "2"), "OK")
	is(r.MGet(ctx, "a", "b", "nope"), []any{"1", "2", nil})
	is(r.MSetNX(ctx, "a", "3", "c", "3"), false)
	is(r.SetNX(ctx, "c", "3", 0), true)
	is(r.GetDel(ctx, "c"), "3")
	is(r.Exists(ctx, "a", "b", "c"), int64(2))
	is(r.Type(ctx, "a"), "string")
	is(r.Type(ctx, "c"), "none")
	is(r.Del(ctx, "a", "b", "c"), int64(2))

	// Expiry.
	is(r.Set(ctx, "session", "s", 100*time.Second), "OK")
	within("TTL", r.TTL(ctx, "session").Val(), 99*time.Second, 100*time.Second)
	within("PTTL", r.PTTL(ctx, "session").Val(), 99*time.Second, 100*time.Second)
	is(r.ExpireGT(ctx, "session", 200*time.Second), true)
	is(r.ExpireLT(ctx, "session", 300*time.Second), false)
	at := time.Unix(0, 0).Add(r.ExpireTime(ctx, "session").Val())
	if math.Abs(time.Until(at).Seconds()-200) >= 3 {
		fail("EXPIRETIME: %v", at)
	}
	is(r.Persist(ctx, "session"), true)
	is(r.TTL(ctx, "session"), time.Duration(-1))
	is(r.TTL(ctx, "nope"), time.Duration(-2))
	is(r.GetEx(ctx, "session", 1500*time.Millisecond), "s")
	within("PTTL", r.PTTL(ctx, "session").Val(), time.Second, 1500*time.Millisecond)
	is(r.SetEx(ctx, "short", "v", time.Second), "OK")
	is(r.Do(ctx, "PSETEX", "short2", 300, "v"), "OK")
	time.Sleep(1600 * time.Millisecond)
	is(r.MGet(ctx, "short", "short2", "session"), []any{nil, nil, nil})
	is(r.SetArgs(ctx, "gone", "v", redis.SetArgs{ExpireAt: time.Now().Add(100 * time.Second)}), "OK")
	is(r.Do(ctx, "EXPIRE", "gone", -1), int64(1))
	is(r.Exists(ctx, "gone"), int64(0))

	// Transactions.
	r.Set(ctx, "balance", "10", 0)
	err := r.Watch(ctx, func(tx *redis.Tx) error {
		current, err := tx.Get(ctx, "balance").Int()
		if err != nil {
			return err
		}
		cmds, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, "balance", strconv.Itoa(current-3), 0)
			pipe.Incr(ctx, "withdrawals")
			return nil
		})
		if err == nil {
			is(cmds[0], "OK")
			is(cmds[1], int64(1))
		}
		return err
	}, "balance")
	eq("WATCH ... EXEC", fmt.Sprint(err), "<nil>")
	is(r.Get(ctx, "balance"), "7")
	other := client(3, password)
	err = r.Watch(ctx, func(tx *redis.Tx) error {
		other.Set(ctx, "balance", "100", 0)
		_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			return pipe.Set(ctx, "balance", "0", 0).Err()
		})
		return err
	}, "balance")
	if !errors.Is(err, redis.TxFailedErr) {
		fail("EXEC ran although a watched key changed: %v", err)
	}
	is(r.Get(ctx, "balance"), "100")

	// Pipelines without a transaction: 1000 commands, replies in order.
	cmds, err := r.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := range 500 {
			pipe.Set(ctx, fmt.Sprintf("p:%d", i), i, 0)
			pipe.Get(ctx, fmt.Sprintf("p:%d", i))
		}
		return nil
	})
	eq("pipeline", fmt.Sprint(err), "<nil>")
	for i := range 500 {
		is(cmds[2*i], "OK")
		is(cmds[2*i+1], strconv.Itoa(i))
	}

	// The key walk.
	walked := map[string]bool{}
	for keys := r.Scan(ctx, 0, "p:*", 50).Iterator(); keys.Next(ctx); {
		walked[keys.Val()] = true
	}
	eq("SCAN", len(walked), 500)
	eq("KEYS", len(r.Keys(ctx, "p:1*").Val()), 111)
	is(r.DBSize(ctx), int64(505))
	if r.RandomKey(ctx).Val() == "" {
		fail("RANDOMKEY found no key")
	}
	if !strings.Contains(r.Info(ctx, "server").Val(), "redis_version:") {
		fail("INFO server has no redis_version")
	}
	is(r.ConfigGet(ctx, "maxmemory-policy"), map[string]string{"maxmemory-policy": "allkeys-lru"})
	is(r.Do(ctx, "SELECT", 0), "OK")

	// RESP2 (the connections above negotiated RESP3).
	r2 := client(2, password)
	is(r2.Get(ctx, "p:7"), "7")
	is(r2.Get(ctx, "nope"), nil)
	is(r2.ConfigGet(ctx, "databases"), map[string]string{"databases": "1"})
	is(r2.TTL(ctx, "p:7"), time.Duration(-1))
	fmt.Println("scenario passed")
}
