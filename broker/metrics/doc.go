// Package metrics defines every Prometheus metric the broker exports, with
// their names in one place, so dashboards and alerts have one source.
package metrics
