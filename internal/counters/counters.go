// Package counters is the one way a package's live counters become its
// exported Stats snapshot, and a snapshot becomes a log line.
//
// A package that counts things keeps two structs:
//
//   - the live counters: an unexported struct of [atomic.Int64] fields
//     only, which the package adds to as things happen. (atomic.Int64, not
//     an int64 with atomic.AddInt64: it is 64-bit aligned on 32-bit
//     platforms too.)
//   - the snapshot: its exported Stats struct of int64 fields with json
//     tags, which callers read, /metrics exports (internal/ops) and logs
//     print.
//
// A live field and a Stats field are twins when their names are equal
// ignoring case: bytesUp and BytesUp, tlsErrors and TLSErrors.
// [Snapshot] copies each live field into its twin; it matches the fields
// once per pair of types, not per call, so it is cheap enough for every
// scrape and log line. Before this package each Stats method copied
// field by field, and a counter added in one place could be forgotten in
// another.
//
// The rules:
//
//  1. Every field of the live struct is an atomic.Int64 whose twin is an
//     exported int64 field of Stats ([Snapshot] panics otherwise: a
//     programming error, which rule 3 catches first).
//  2. Every exported field of Stats has a live twin, or is filled by the
//     Stats method after the snapshot (a gauge, a flag, a value read from
//     elsewhere) and is named as such in the package's [Check].
//  3. Each package has a test calling [Check] for each of its pairs, so a
//     counter missing its twin, or a new Stats field nobody fills, fails.
//
// Adding a counter is thus a live field and a Stats field of the same
// name (with its json tag), plus, for the Stats types internal/ops
// exports, a row in its metric table or its list of fields kept off
// /metrics.
//
// [Format] writes a Stats value as key=value pairs in field order, keyed
// by json tags, for log lines.
package counters

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// pairKey[S, L] is the cache key of the mapping of the type pair (S, L):
// a zero-size value, so making it an interface allocates nothing.
type pairKey[S, L any] struct{}

// mapping is what Snapshot copies for one type pair: the byte offsets of
// each live counter and of its twin in Stats, or the reason the pair
// cannot be mapped.
type mapping struct {
	pairs []offsets
	err   error
}

type offsets struct{ live, stat uintptr }

var mappings sync.Map // pairKey[S, L]{} -> *mapping

func mappingOf[S, L any]() *mapping {
	if m, ok := mappings.Load(pairKey[S, L]{}); ok {
		return m.(*mapping)
	}
	st, lt := reflect.TypeFor[S](), reflect.TypeFor[L]()
	var m mapping
	var errs []error
	for _, t := range match(st, lt, &errs) {
		m.pairs = append(m.pairs, offsets{live: t.live.Offset, stat: t.stat.Offset})
	}
	m.err = errors.Join(errs...)
	got, _ := mappings.LoadOrStore(pairKey[S, L]{}, &m)
	return got.(*mapping)
}

var atomicInt64 = reflect.TypeFor[atomic.Int64]()

// A twin is a live field and the Stats field it is copied into.
type twin struct{ live, stat reflect.StructField }

// match pairs the fields of the live struct lt with their twins in the
// Stats struct st, in the order of lt's fields, appending to errs what
// breaks rule 1.
func match(st, lt reflect.Type, errs *[]error) []twin {
	if st.Kind() != reflect.Struct {
		*errs = append(*errs, fmt.Errorf("counters: Stats type %v is not a struct", st))
	}
	if lt.Kind() != reflect.Struct {
		*errs = append(*errs, fmt.Errorf("counters: live type %v is not a struct", lt))
	}
	if len(*errs) > 0 {
		return nil
	}
	byName := map[string]reflect.StructField{}
	for i := range st.NumField() {
		f := st.Field(i)
		if !f.IsExported() {
			continue
		}
		k := strings.ToLower(f.Name)
		if g, dup := byName[k]; dup {
			*errs = append(*errs, fmt.Errorf("counters: %v fields %s and %s differ only in case", st, g.Name, f.Name))
		}
		byName[k] = f
	}
	var twins []twin
	seen := map[string]string{}
	for i := range lt.NumField() {
		f := lt.Field(i)
		if f.Type != atomicInt64 {
			*errs = append(*errs, fmt.Errorf("counters: live field %v.%s is %v, not atomic.Int64", lt, f.Name, f.Type))
			continue
		}
		k := strings.ToLower(f.Name)
		if g, dup := seen[k]; dup {
			*errs = append(*errs, fmt.Errorf("counters: live fields %v.%s and %s differ only in case", lt, g, f.Name))
			continue
		}
		seen[k] = f.Name
		s, ok := byName[k]
		switch {
		case !ok:
			*errs = append(*errs, fmt.Errorf("counters: live field %v.%s has no field of the same name in %v", lt, f.Name, st))
		case s.Type.Kind() != reflect.Int64:
			*errs = append(*errs, fmt.Errorf("counters: live field %v.%s has twin %v.%s of type %v, not int64", lt, f.Name, st, s.Name, s.Type))
		default:
			twins = append(twins, twin{live: f, stat: s})
		}
	}
	return twins
}

// Snapshot returns an S whose fields hold the values of their twins in
// live (see the package doc); fields of S without a twin are zero, for
// the caller to fill. It panics if S and L break rule 1 of the package
// doc, which a test calling [Check] reports first.
//
// The live fields are unexported, which reflect does not let a package
// read; Snapshot reads them at the offsets reflect reports, through
// package unsafe, having checked each field's type once.
func Snapshot[S, L any](live *L) S {
	m := mappingOf[S, L]()
	if m.err != nil {
		panic(m.err)
	}
	var s S
	src, dst := unsafe.Pointer(live), unsafe.Pointer(&s)
	for _, p := range m.pairs {
		// Sound: match checked that p.live is the offset of an
		// atomic.Int64 in L and p.stat that of an int64-kinded field
		// in S.
		*(*int64)(unsafe.Add(dst, p.stat)) = (*atomic.Int64)(unsafe.Add(src, p.live)).Load()
	}
	return s
}

// Check reports whether S and the live counters of type L follow the
// rules of the package doc. filled names (by Go name) the fields of S
// with no live twin that the Stats method sets after the snapshot; every
// other field of S must have one. The live value is used only for its
// type; new(L) will do. Every problem is reported, one per line.
func Check[S, L any](live *L, filled ...string) error {
	st, lt := reflect.TypeFor[S](), reflect.TypeFor[L]()
	var errs []error
	twins := match(st, lt, &errs)
	if st.Kind() != reflect.Struct || lt.Kind() != reflect.Struct {
		return errors.Join(errs...)
	}
	counted := map[string]string{} // Stats field -> its live twin
	for _, t := range twins {
		counted[t.stat.Name] = t.live.Name
	}
	named := map[string]bool{} // live field names, lower case, twins or not
	for i := range lt.NumField() {
		named[strings.ToLower(lt.Field(i).Name)] = true
	}
	isFilled := map[string]bool{}
	for _, name := range filled {
		f, ok := st.FieldByName(name)
		switch {
		case !ok || len(f.Index) != 1 || !f.IsExported():
			errs = append(errs, fmt.Errorf("counters: %v has no exported field %s (listed as filled by the caller)", st, name))
		case counted[name] != "":
			errs = append(errs, fmt.Errorf("counters: %v.%s is listed as filled by the caller but is counted by live field %v.%s", st, name, lt, counted[name]))
		case isFilled[name]:
			errs = append(errs, fmt.Errorf("counters: %v.%s is listed as filled twice", st, name))
		}
		isFilled[name] = true
	}
	for i := range st.NumField() {
		f := st.Field(i)
		// A field whose live namesake is not a twin is reported by match.
		if f.IsExported() && !named[strings.ToLower(f.Name)] && !isFilled[f.Name] {
			errs = append(errs, fmt.Errorf("counters: %v.%s (%v) has no live counter in %v and is not listed as filled by the caller", st, f.Name, f.Type, lt))
		}
	}
	return errors.Join(errs...)
}

// A formField is one field Format writes.
type formField struct {
	index int
	key   string // with the "=" after it
}

var formats sync.Map // reflect.Type -> []formField

// fieldsOf returns the fields Format writes of struct type t: the
// exported ones not tagged json:"-", keyed by their json names (or Go
// names, as encoding/json does for untagged fields).
func fieldsOf(t reflect.Type) []formField {
	if ff, ok := formats.Load(t); ok {
		return ff.([]formField)
	}
	var ff []formField
	for i := range t.NumField() {
		if key, ok := Key(t.Field(i)); ok {
			ff = append(ff, formField{index: i, key: key + "="})
		}
	}
	got, _ := formats.LoadOrStore(t, ff)
	return got.([]formField)
}

// Key returns the name of Stats field f in JSON, in Format's lines and in
// internal/ops's metric tables: its json tag's name, or its Go name if it
// has none. It reports false for unexported fields and those tagged "-".
func Key(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch tag {
	case "-":
		return "", false
	case "":
		return f.Name, true
	}
	return tag, true
}

// Format returns s, a struct, as one line of key=value pairs separated by
// spaces, in field order: the key is the field's json name (its Go name
// if untagged; fields tagged "-" and unexported ones are left out), the
// value is written as strconv does for numbers and booleans, strings are
// quoted when they are empty or hold spaces, quotes or '=', and anything
// else as fmt's %v. Every field is written, zero or not (omitempty is
// ignored). Format panics if S is not a struct, a programming error.
func Format[S any](s S) string {
	t := reflect.TypeFor[S]()
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("counters: Format of %v, not a struct", t))
	}
	v := reflect.ValueOf(&s).Elem()
	var b []byte
	for i, f := range fieldsOf(t) {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, f.key...)
		b = appendValue(b, v.Field(f.index))
	}
	return string(b)
}

func appendValue(b []byte, v reflect.Value) []byte {
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(b, v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.AppendUint(b, v.Uint(), 10)
	case reflect.Bool:
		return strconv.AppendBool(b, v.Bool())
	case reflect.Float32, reflect.Float64:
		return strconv.AppendFloat(b, v.Float(), 'g', -1, v.Type().Bits())
	case reflect.String:
		if s := v.String(); s != "" && !strings.ContainsAny(s, " \t\n\"=") {
			return append(b, s...)
		}
		return strconv.AppendQuote(b, v.String())
	}
	return fmt.Appendf(b, "%v", v.Interface())
}
