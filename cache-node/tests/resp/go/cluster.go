package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// redirects counts the -MOVED and -ASK replies the cluster client's node connections
// receive: the client follows them itself and says nothing.
type redirects struct{ moved, ask atomic.Int64 }

func (r *redirects) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *redirects) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil {
			switch {
			case strings.HasPrefix(err.Error(), "MOVED "):
				r.moved.Add(1)
			case strings.HasPrefix(err.Error(), "ASK "):
				r.ask.Add(1)
			}
		}
		return err
	}
}

func (r *redirects) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// moves is the scenario of ../cluster.py's "moves" with go-redis' ClusterClient, given one
// node's RESP port: it writes count keys, prints "ready" and then, until a line "stop"
// arrives on its standard input, rewrites every key with the round's value and reads every
// one back while the test changes the membership under it. Every read must return the value
// just written, through whatever -MOVED and -ASK redirects the move causes. Each round
// starts by reloading the slots, as a client with a periodic topology refresh does.
func moves(port string, count int) {
	counted := &redirects{}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        []string{"127.0.0.1:" + port},
		MaxRedirects: 8,
	})
	cluster.OnNewNode(func(node *redis.Client) { node.AddHook(counted) })
	keys := make([]string, count)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	round := func(n int) {
		cluster.ReloadState(ctx)
		for _, key := range keys {
			is(cluster.Set(ctx, key, fmt.Sprintf("%s r%d", key, n), 0), "OK")
		}
		for _, key := range keys {
			is(cluster.Get(ctx, key), fmt.Sprintf("%s r%d", key, n))
		}
	}
	round(0)
	stop := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(stop)
	}()
	fmt.Println("ready")
	rounds := 1
	for {
		select {
		case <-stop:
			fmt.Printf("scenario passed after %d rounds, %d MOVED and %d ASK followed\n",
				rounds, counted.moved.Load(), counted.ask.Load())
			return
		default:
			round(rounds)
			rounds++
		}
	}
}

// movesArgs runs moves from "moves PORT KEYS".
func movesArgs(args []string) {
	count, err := strconv.Atoi(args[1])
	if err != nil {
		fail("KEYS: %v", err)
	}
	moves(args[0], count)
}
