package memtier

import (
	"fmt"
	"testing"
	"time"
)

func TestByteBound(t *testing.T) {
	c := New[int](1000, 0)
	for i := range 30 {
		c.Put(fmt.Sprint(i), i, 100, time.Time{})
	}
	if n, b := c.Usage(); n != 10 || b != 1000 {
		t.Errorf("usage %d entries, %d bytes; want 10, 1000", n, b)
	}
	// Sizes differ: one large entry evicts as many small ones as it needs.
	c.Put("large", -1, 450, time.Time{})
	if n, b := c.Usage(); n != 6 || b != 950 {
		t.Errorf("after a 450-byte entry: %d entries, %d bytes; want 6, 950", n, b)
	}
	// Replacing an entry counts its new size, not both.
	c.Put("large", -2, 50, time.Time{})
	if n, b := c.Usage(); n != 6 || b != 550 {
		t.Errorf("after replacing it with 50 bytes: %d entries, %d bytes; want 6, 550", n, b)
	}
	if v, ok := c.Get("large", time.Now()); !ok || v != -2 {
		t.Errorf("Get(large) = %d, %v; want the new value", v, ok)
	}
}

func TestLRUOrder(t *testing.T) {
	c := New[string](300, 0)
	now := time.Now()
	c.Put("a", "A", 100, time.Time{})
	c.Put("b", "B", 100, time.Time{})
	c.Put("c", "C", 100, time.Time{})
	c.Get("a", now) // a is now the most recent; b the least
	c.Put("d", "D", 100, time.Time{})
	if _, ok := c.Get("b", now); ok {
		t.Error("b, the least recently used, was not evicted")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.Get(k, now); !ok {
			t.Errorf("%s evicted before the least recently used", k)
		}
	}
}

func TestExpiry(t *testing.T) {
	c := New[string](1000, 0)
	now := time.Now()
	c.Put("short", "s", 10, now.Add(time.Minute))
	c.Put("forever", "f", 10, time.Time{})
	if _, ok := c.Get("short", now.Add(time.Minute-time.Nanosecond)); !ok {
		t.Error("entry missing before its expiry")
	}
	if _, ok := c.Get("short", now.Add(time.Minute)); ok {
		t.Error("entry served at its expiry")
	}
	if n, b := c.Usage(); n != 1 || b != 10 {
		t.Errorf("expired entry still counted: %d entries, %d bytes", n, b)
	}
	if _, ok := c.Get("forever", now.Add(1000*time.Hour)); !ok {
		t.Error("entry without expiry dropped")
	}
}

func TestOversizeRefused(t *testing.T) {
	c := New[string](1000, 100)
	if c.MaxEntry() != 100 {
		t.Errorf("MaxEntry = %d, want 100", c.MaxEntry())
	}
	c.Put("k", "old", 50, time.Time{})
	if c.Put("k", "new", 101, time.Time{}) {
		t.Error("Put of an entry over MaxEntry reported kept")
	}
	if v, ok := c.Get("k", time.Now()); ok {
		t.Errorf("Get after an oversize Put = %q: the older value is served in its place", v)
	}
	if !c.Put("k", "fits", 100, time.Time{}) {
		t.Error("Put of an entry of MaxEntry bytes refused")
	}
	if n, b := c.Usage(); n != 1 || b != 100 {
		t.Errorf("usage %d entries, %d bytes; want 1, 100", n, b)
	}
	if New[int](100, 500).MaxEntry() != 100 {
		t.Error("MaxEntry larger than the bound")
	}
	c.Delete("k")
	if n, _ := c.Usage(); n != 0 {
		t.Errorf("%d entries after Delete", n)
	}
}
