//go:build !race

package chaos

// raceDetector is true in a build with -race, which slows every call many
// times over: latency comparisons are recorded but not asserted then.
const raceDetector = false
