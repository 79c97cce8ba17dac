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
//   - internal/server/event_handlers.go eventMatchesAlertSource: an Alert takes an event when
//     one of its eventSources has the event's kind, its namespace (the Alert's when empty) and
//     its name (or "*"), and the Alert's eventSeverity is the event's or "info".
//   - internal/notifier/forwarder.go: body = json.Marshal(event); X-Signature =
//     "sha256=" + hex(HMAC-SHA256(token, body)); gotk-component = reportingController;
//     Content-Type application/json; POST; go-retryablehttp retries connection errors, 429 and
//     5xx but 501 (RetryMax 4).
//
// Usage: flux-forward -manifests flux.yaml -scenario scenario.json [-retry-wait 10ms]
// manifests: the Secret, Provider (generic-hmac) and Alert a user applies (multi-document YAML).
// scenario: {"events": [{"object": {...ObjectReference, "annotations": {...}}, "severity", "timestamp",
//            "message", "reason", "metadata": {...}, "reportingController", "reportingInstance"}]}
// Output: one JSON line per event: {"index", "forwarded", "body", "status", "response", "error"}.
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

	"github.com/ghodss/yaml"
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

type manifest struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	StringData map[string]string `json:"stringData"`
	Spec       struct {
		Type      string `json:"type"`
		Address   string `json:"address"`
		SecretRef struct {
			Name string `json:"name"`
		} `json:"secretRef"`
		ProviderRef struct {
			Name string `json:"name"`
		} `json:"providerRef"`
		EventSeverity string `json:"eventSeverity"`
		EventSources  []struct {
			Kind      string `json:"kind"`
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"eventSources"`
		EventMetadata map[string]string `json:"eventMetadata"`
		Summary       string            `json:"summary"`
	} `json:"spec"`
}

type scenario struct {
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
	manifestsPath := flag.String("manifests", "", "Secret, Provider and Alert (multi-document YAML)")
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
	raw, err = os.ReadFile(*manifestsPath)
	if err != nil {
		die("%v", err)
	}
	byKind := map[string]manifest{}
	for _, doc := range strings.Split("\n"+string(raw), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m manifest
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			die("manifests: %v", err)
		}
		byKind[m.Kind] = m
	}
	provider, alert, secret := byKind["Provider"], byKind["Alert"], byKind["Secret"]
	if provider.Spec.Type != "generic-hmac" || alert.Spec.ProviderRef.Name != provider.Metadata.Name || provider.Spec.SecretRef.Name != secret.Metadata.Name {
		die("manifests: need a generic-hmac Provider, an Alert referring to it, and the Secret it names")
	}
	token := secret.StringData["token"]
	if token == "" {
		die("manifests: the Secret has no token")
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

		// notification-controller receives it, and the Alert takes it or not.
		var event Event
		if err := json.Unmarshal(wire, &event); err != nil {
			die("%v", err)
		}
		matched := false
		for _, src := range alert.Spec.EventSources {
			ns := src.Namespace
			if ns == "" {
				ns = alert.Metadata.Namespace
			}
			if event.InvolvedObject.Namespace == ns && event.InvolvedObject.Kind == src.Kind &&
				(event.Severity == alert.Spec.EventSeverity || alert.Spec.EventSeverity == "info") &&
				(src.Name == "*" || src.Name == event.InvolvedObject.Name) {
				matched = true
			}
		}
		if !matched {
			_ = out.Encode(map[string]any{"index": i, "forwarded": false})
			continue
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
		for k, v := range alert.Spec.EventMetadata {
			combined[k] = v
		}
		if alert.Spec.Summary != "" {
			combined["summary"] = alert.Spec.Summary
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
		mac := hmac.New(sha256.New, []byte(token))
		mac.Write(body)
		signature := fmt.Sprintf("sha256=%x", mac.Sum(nil))
		rec := map[string]any{"index": i, "forwarded": true, "body": string(body)}
		for attempt := 0; attempt <= 4; attempt++ {
			req, err := http.NewRequest(http.MethodPost, provider.Spec.Address, bytes.NewReader(body))
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
