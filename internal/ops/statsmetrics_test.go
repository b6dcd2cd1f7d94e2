package ops

import (
	"reflect"
	"testing"

	"github.com/go-cache-plugin/go-cache-plugin/lib/gobuild"
	"github.com/go-cache-plugin/go-cache-plugin/lib/modproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/revproxy"
	"github.com/go-cache-plugin/go-cache-plugin/lib/store"
	"github.com/prometheus/client_golang/prometheus"
)

// TestStatsTablesCoverFields checks that every int64 field of each Stats
// struct is either a metric or deliberately kept off /metrics, so that a
// new counter cannot be forgotten, and that no table names a field twice.
func TestStatsTablesCoverFields(t *testing.T) {
	for _, c := range []struct {
		typ   reflect.Type
		table statTable
	}{
		{reflect.TypeFor[store.Stats](), storeTable},
		{reflect.TypeFor[modproxy.Stats](), modProxyTable},
		{reflect.TypeFor[revproxy.Stats](), revProxyTable},
		{reflect.TypeFor[gobuild.PrefetchStats](), prefetchTable},
	} {
		listed := map[string]int{}
		for _, r := range c.table.rows {
			listed[r.field]++
		}
		for _, f := range c.table.off {
			listed[f]++
		}
		for tag, f := range fieldsByTag(c.typ) {
			if f.Type.Kind() != reflect.Int64 {
				continue
			}
			switch listed[tag] {
			case 0:
				t.Errorf("%v.%s (json %q) is neither a metric nor listed as kept off /metrics", c.typ, f.Name, tag)
			case 1:
			default:
				t.Errorf("%v: field %q listed %d times", c.typ, tag, listed[tag])
			}
			delete(listed, tag)
		}
		for tag := range listed {
			t.Errorf("%v has no int64 field with json tag %q", c.typ, tag)
		}
	}
}

// TestStatsCollectorReadsFields checks that a collector reports each
// row's field, with its label, as the kind the row says.
func TestStatsCollectorReadsFields(t *testing.T) {
	type sample struct {
		A int64 `json:"a"`
		B int64 `json:"b,omitempty"`
		G int64 `json:"g"`
	}
	s := sample{A: 3, B: 5, G: 7}
	c := newStatsCollector(always(func() sample { return s }), statTable{rows: []statRow{
		{field: "a", name: "t_total", help: "h", label: "k", value: "x"},
		{field: "b", name: "t_total", help: "h", label: "k", value: "y"},
		{field: "g", name: "t_gauge", help: "g", gauge: true},
	}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			key := mf.GetName() + "/" + mf.GetType().String()
			for _, l := range m.Label {
				key += "/" + l.GetName() + "=" + l.GetValue()
			}
			if m.Counter != nil {
				got[key] = m.Counter.GetValue()
			} else {
				got[key] = m.Gauge.GetValue()
			}
		}
	}
	want := map[string]float64{
		"gocacheplugin_t_total/COUNTER/k=x": 3,
		"gocacheplugin_t_total/COUNTER/k=y": 5,
		"gocacheplugin_t_gauge/GAUGE":       7,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("collected %v, want %v", got, want)
	}
}

// TestStatsCollectorRefusesUnknownField checks that a row naming a field
// the struct lacks is caught when the collector is made.
func TestStatsCollectorRefusesUnknownField(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for a row naming a missing field")
		}
	}()
	newStatsCollector(always(func() store.Stats { return store.Stats{} }), statTable{rows: []statRow{{field: "nope", name: "x"}}})
}
