package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmpConn is a QEMU Machine Protocol client: one command at a time;
// asynchronous events are skipped.
type qmpConn struct {
	mu   sync.Mutex
	conn net.Conn
	dec  *json.Decoder
	id   int
	err  error // a broken connection stays broken
}

type qmpMessage struct {
	Event  string          `json:"event"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID  *int            `json:"id"`
	QMP json.RawMessage `json:"QMP"`
}

// dialQMP connects, reads the greeting and leaves capabilities
// negotiation mode.
func dialQMP(ctx context.Context, path string, done <-chan struct{}) (*qmpConn, error) {
	conn, err := dialUnix(ctx, path, done)
	if err != nil {
		return nil, err
	}
	q := &qmpConn{conn: conn, dec: json.NewDecoder(conn)}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	var greeting qmpMessage
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %v", err)
	}
	if _, err := q.exec(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) close() { q.conn.Close() }

// exec runs one command and returns its "return" value.
func (q *qmpConn) exec(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return nil, q.err
	}
	q.id++
	req := map[string]any{"execute": command, "id": q.id}
	if args != nil {
		req["arguments"] = args
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Minute)
	}
	q.conn.SetDeadline(dl)
	if err := json.NewEncoder(q.conn).Encode(req); err != nil {
		q.err = fmt.Errorf("qmp: %w", err)
		return nil, q.err
	}
	for {
		var m qmpMessage
		if err := q.dec.Decode(&m); err != nil {
			q.err = fmt.Errorf("qmp: %w", err)
			return nil, q.err
		}
		if m.Event != "" || m.ID == nil || *m.ID != q.id {
			continue
		}
		if m.Error != nil {
			return nil, errors.New(m.Error.Class + ": " + m.Error.Desc)
		}
		return m.Return, nil
	}
}
