// flux-forward: what a Flux event goes through from a controller to a generic-hmac Provider,
// built with Go's encoding/json and crypto/hmac as Flux is.
//
// Semantics kept from upstream (read 2026-11):
//   - fluxcd/pkg runtime/events/recorder.go: the object's annotations prefixed
//     "event.toolkit.fluxcd.io/" are copied into the event's metadata, verbatim.
//   - fluxcd/pkg apis/event/v1beta1: the Event layout and JSON names below; involvedObject is a
//     corev1.ObjectReference (every field omitempty); timestamp is a metav1.Time (RFC 3339, UTC,
//     seconds); metadata and reportingInstance are omitempty.
//   - notification-controller internal/server/event_server.go cleanupMetadata: only keys
//     prefixed "event.toolkit.fluxcd.io/" or "<object group>/" are kept, "<group>/checksum" and
//     "<group>/digest" dropped; event_handlers.go excludeInternalMetadata drops "<group>/token";
//     combineEventMetadata builds the metadata anew, later writes winning: the event-group keys
//     (prefix stripped), the Alert's spec.eventMetadata, spec.summary, the object-group keys
//     (prefix stripped).
//   - internal/notifier/forwarder.go: body = json.Marshal(event); X-Signature =
//     "sha256=" + hex(HMAC-SHA256(token, body)); gotk-component = reportingController;
//     Content-Type application/json; POST; go-retryablehttp retries connection errors, 429 and
//     5xx but 501 (RetryMax 4).
//
// Usage: flux-forward -scenario scenario.json [-retry-wait 10ms]
// scenario: {"address": url, "token": "...", "alert": {"eventMetadata": {...}, "summary": ""},
//            "events": [{"object": {...ObjectReference, "annotations": {...}}, "severity", "timestamp",
//                        "message", "reason", "metadata": {...}, "reportingController", "reportingInstance"}]}
// Output: one JSON line per event: {"index", "body", "status", "response", "error"}.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// ObjectReference is corev1.ObjectReference's JSON layout.
type ObjectReference struct {
	Kind            string `json:"kind,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name,omitempty"`
	UID             string `json:"uid,omitempty"`
	APIVersion      string `json:"apiVersion,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	FieldPath       string `json:"fieldPath,omitempty"`
}

// Time is metav1.Time's JSON form.
type Time struct{ time.Time }

func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	p, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return err
	}
	t.Time = p.Local()
	return nil
}

// Event is eventv1.Event's JSON layout.
type Event struct {
	InvolvedObject      ObjectReference   `json:"involvedObject"`
	Severity            string            `json:"severity"`
	Timestamp           Time              `json:"timestamp"`
	Message             string            `json:"message"`
	Reason              string            `json:"reason"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	ReportingController string            `json:"reportingController"`
	ReportingInstance   string            `json:"reportingInstance,omitempty"`
}

const eventGroup = "event.toolkit.fluxcd.io"

type scenario struct {
	Address string `json:"address"`
	Token   string `json:"token"`
	Alert   struct {
		EventMetadata map[string]string `json:"eventMetadata"`
		Summary       string            `json:"summary"`
	} `json:"alert"`
	Events []struct {
		Object struct {
			ObjectReference
			Annotations map[string]string `json:"annotations"`
		} `json:"object"`
		Severity            string            `json:"severity"`
		Timestamp           string            `json:"timestamp"`
		Message             string            `json:"message"`
		Reason              string            `json:"reason"`
		Metadata            map[string]string `json:"metadata"`
		ReportingController string            `json:"reportingController"`
		ReportingInstance   string            `json:"reportingInstance"`
	} `json:"events"`
}

func group(apiVersion string) string {
	if i := strings.Index(apiVersion, "/"); i >= 0 {
		return apiVersion[:i]
	}
	return ""
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "flux-forward: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	path := flag.String("scenario", "", "scenario (JSON)")
	retryWait := flag.Duration("retry-wait", 2*time.Second, "wait between retries")
	flag.Parse()
	raw, err := os.ReadFile(*path)
	if err != nil {
		die("%v", err)
	}
	var sc scenario
	if err := json.Unmarshal(raw, &sc); err != nil {
		die("scenario: %v", err)
	}
	out := json.NewEncoder(os.Stdout)
	client := &http.Client{Timeout: 15 * time.Second}
	for i, in := range sc.Events {
		// The controller's recorder.
		meta := map[string]string{}
		for k, v := range in.Metadata {
			meta[k] = v
		}
		for k, v := range in.Object.Annotations {
			if strings.HasPrefix(k, eventGroup+"/") {
				meta[k] = v
			}
		}
		ts, err := time.Parse(time.RFC3339, in.Timestamp)
		if err != nil {
			die("event %d: timestamp: %v", i, err)
		}
		sent := Event{
			InvolvedObject: in.Object.ObjectReference, Severity: in.Severity, Timestamp: Time{ts},
			Message: in.Message, Reason: in.Reason, Metadata: meta,
			ReportingController: in.ReportingController, ReportingInstance: in.ReportingInstance,
		}
		wire, err := json.Marshal(sent)
		if err != nil {
			die("%v", err)
		}

		// notification-controller receives it.
		var event Event
		if err := json.Unmarshal(wire, &event); err != nil {
			die("%v", err)
		}
		objectGroup := group(event.InvolvedObject.APIVersion) + "/"
		kept := map[string]string{}
		for k, v := range event.Metadata {
			excluded := strings.EqualFold(k, objectGroup+"checksum") || strings.EqualFold(k, objectGroup+"digest")
			if !excluded && (strings.HasPrefix(k, eventGroup+"/") || strings.HasPrefix(k, objectGroup)) {
				kept[k] = v
			}
		}
		delete(kept, objectGroup+"token")
		combined := map[string]string{}
		for k, v := range kept {
			if strings.HasPrefix(k, eventGroup+"/") {
				combined[strings.TrimPrefix(k, eventGroup+"/")] = v
			}
		}
		for k, v := range sc.Alert.EventMetadata {
			combined[k] = v
		}
		if sc.Alert.Summary != "" {
			combined["summary"] = sc.Alert.Summary
		}
		for k, v := range kept {
			if strings.HasPrefix(k, objectGroup) {
				combined[strings.TrimPrefix(k, objectGroup)] = v
			}
		}
		if len(combined) > 0 {
			event.Metadata = combined
		} else {
			event.Metadata = nil
		}

		// The generic-hmac forwarder.
		body, err := json.Marshal(event)
		if err != nil {
			die("%v", err)
		}
		mac := hmac.New(sha256.New, []byte(sc.Token))
		mac.Write(body)
		signature := fmt.Sprintf("sha256=%x", mac.Sum(nil))
		rec := map[string]any{"index": i, "body": string(body)}
		for attempt := 0; attempt <= 4; attempt++ {
			req, err := http.NewRequest(http.MethodPost, sc.Address, bytes.NewReader(body))
			if err != nil {
				die("%v", err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("gotk-component", event.ReportingController)
			req.Header.Set("X-Signature", signature)
			resp, err := client.Do(req)
			if err != nil {
				rec["error"] = err.Error()
				time.Sleep(*retryWait)
				continue
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			rec["status"], rec["response"] = resp.StatusCode, string(data)
			delete(rec, "error")
			if resp.StatusCode == 429 || (resp.StatusCode >= 500 && resp.StatusCode != 501) {
				time.Sleep(*retryWait)
				continue
			}
			break
		}
		_ = out.Encode(rec)
	}
}
