package memory

import (
	"reflect"
	"testing"
)

// TestRecordHasNoPointers keeps the record slabs out of the garbage
// collector's way: a pointer in rec would make it scan every stored lease
// on every cycle.
func TestRecordHasNoPointers(t *testing.T) {
	var walk func(reflect.Type) bool
	walk = func(t reflect.Type) bool {
		switch t.Kind() {
		case reflect.Struct:
			for i := range t.NumField() {
				if walk(t.Field(i).Type) {
					return true
				}
			}
			return false
		case reflect.Array:
			return walk(t.Elem())
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
			return false
		}
		return true
	}
	if walk(reflect.TypeFor[rec]()) {
		t.Error("memory.rec holds a pointer (a string, time.Time, slice, map...); keep those in recStrings or as symbols")
	}
}
