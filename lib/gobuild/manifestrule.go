package gobuild

// When a build does not replace its manifest. Runs of one job kind that
// touch few actions (go vet of one package, go list, go build of one
// command where CI builds ./...) would, if the most recent build of a
// name always won, leave the next cold worker a manifest of a handful of
// actions. So a build that asked for fewer than 1/smallRunDivisor of the
// actions its manifest lists keeps that manifest, as long as at least
// half of what it asked for is listed there with the same output: the
// manifest is then current, and a superset of the small run's. If most of
// the small run's actions are not listed (the code or toolchain changed),
// the manifest is stale and the small run's list replaces it; the next
// big run then writes a big one again.
//
// No clock is involved: the rule is the same on every worker, and a
// manifest kept stays only as long as its actions are current. A job kind
// whose runs shrink for good keeps the bigger manifest until its actions
// change (a change to the code they depend on, a new Go release); name a
// manifest with --manifest, or delete the old one, to switch at once.

// smallRunDivisor: a build that asked for fewer than 1/smallRunDivisor of
// the actions its manifest lists is a small run.
const smallRunDivisor = 4

// keepListed reports whether a build that asked for entries leaves the
// manifest it read, which lists listed, in place (see above).
func keepListed(entries, listed []manifestEntry) bool {
	if len(entries) == 0 || len(entries)*smallRunDivisor >= len(listed) {
		return false
	}
	in := make(map[aid32]manifestEntry, len(listed))
	for _, e := range listed {
		in[e.id] = e
	}
	current := 0
	for _, e := range entries {
		if o, ok := in[e.id]; ok && (!o.hasOutput() || o.out == e.out) {
			current++
		}
	}
	return 2*current >= len(entries)
}
