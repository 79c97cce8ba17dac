// argocd-notify: Argo CD's notification engine, reduced to what a webhook service does, built
// from the same libraries Argo CD uses: Go text/template + Sprig for templates, expr for
// triggers. It reads an argocd-notifications-cm ConfigMap, the argocd-notifications-secret
// values, and a history of Application objects; for each state of each application it evaluates
// the subscribed triggers as argoproj/notifications-engine does and sends what they render.
//
// Semantics kept from upstream (argoproj/notifications-engine, read at cf274d2):
//   - pkg/templates/service.go: sprig.TxtFuncMap() minus env/expandenv.
//   - pkg/services/webhook.go: URL = TrimRight(url, "/") + "/" + TrimLeft(path, "/"); every
//     configured header set; method from the template (GET when none); a non-2xx is a failed send;
//     go-retryablehttp retries connection errors, 429 and 5xx (not 501) up to retryMax (3).
//   - pkg/api/config.go: `$key` in a service's configuration is replaced by the secret's value.
//   - pkg/triggers/service.go: condition key "[i].<base64url sha1 of when>"; a `when` that
//     errors is false; oncePer = fmt.Sprintf("%v", value), evaluated only when `when` is true.
//   - pkg/controller/state.go + controller.go: a condition sends when the state key is absent;
//     a false condition deletes its key unless it carries oncePer; a failed send deletes the key
//     (so it is retried on a later update) — except with oncePer, where the key stays.
//   - argo-cd util/notification/settings + expression: vars {app, context, appProject, time,
//     strings, ...}; templates also get serviceType and recipient; time.Parse is RFC 3339 and
//     panics (so the expression errors) on anything else, nil included.
//
// Subscriptions: annotations notifications.argoproj.io/subscribe.<trigger>.<service>: "<r1;r2>"
// and the ConfigMap's `subscriptions` list.
//
// Usage: argocd-notify -cm cm.yaml -secrets secrets.json -history history.json [-retry-wait 10ms]
// The history is {"steps": [{"app": <Application>} | {"patch": <JSON merge patch of the previous app>}]}.
// Output: one JSON line per send attempt (and per render error) on stdout.
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/Masterminds/sprig"
	"github.com/antonmedv/expr"
	"github.com/antonmedv/expr/vm"
	"github.com/ghodss/yaml"
)

type condition struct {
	OncePer string   `json:"oncePer,omitempty"`
	When    string   `json:"when,omitempty"`
	Send    []string `json:"send,omitempty"`
}

type webhookTemplate struct {
	Method string `json:"method"`
	Body   string `json:"body"`
	Path   string `json:"path"`
}

type notificationTemplate struct {
	Message string                     `json:"message"`
	Webhook map[string]webhookTemplate `json:"webhook"`
}

type header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type webhookService struct {
	URL       string   `json:"url"`
	Headers   []header `json:"headers"`
	BasicAuth *struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"basicAuth"`
	RetryMax int `json:"retryMax"`
}

type subscription struct {
	Recipients []string `json:"recipients"`
	Triggers   []string `json:"triggers"`
}

type destination struct{ Service, Recipient string }

type record struct {
	Step      int    `json:"step"`
	App       string `json:"app"`
	Trigger   string `json:"trigger"`
	OncePer   string `json:"oncePer,omitempty"`
	Service   string `json:"service"`
	Method    string `json:"method,omitempty"`
	URL       string `json:"url,omitempty"`
	Body      string `json:"body,omitempty"`
	Status    int    `json:"status,omitempty"`
	Response  string `json:"response,omitempty"`
	Error     string `json:"error,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	Delivered bool   `json:"delivered"`
}

var keyPattern = regexp.MustCompile(`[$][\w-]+`)

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-notify: "+format+"\n", args...)
	os.Exit(2)
}

func hash(input string) string {
	h := sha1.New()
	_, _ = h.Write([]byte(input))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func timeExprs() map[string]any {
	return map[string]any{
		"Parse": func(timestamp string) time.Time {
			res, err := time.Parse(time.RFC3339, timestamp)
			if err != nil {
				panic(err)
			}
			return res
		},
		"Now":    time.Now,
		"Second": time.Second,
		"Minute": time.Minute,
		"Hour":   time.Hour,
	}
}

func stringsExprs() map[string]any {
	return map[string]any{"ReplaceAll": strings.ReplaceAll, "ToUpper": strings.ToUpper, "ToLower": strings.ToLower}
}

// mergePatch applies an RFC 7396 JSON merge patch.
func mergePatch(target any, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	} else {
		c := map[string]any{}
		for k, v := range t {
			c[k] = v
		}
		t = c
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = mergePatch(t[k], v)
		}
	}
	return t
}

func getString(obj map[string]any, path ...string) string {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	s, _ := cur.(string)
	return s
}

func main() {
	cmPath := flag.String("cm", "", "argocd-notifications-cm ConfigMap (YAML)")
	secretsPath := flag.String("secrets", "", "argocd-notifications-secret values (JSON object)")
	historyPath := flag.String("history", "", "application history (JSON)")
	retryWait := flag.Duration("retry-wait", time.Second, "wait between retries (retryWaitMin)")
	flag.Parse()

	var cm struct {
		Data map[string]string `json:"data"`
	}
	raw, err := os.ReadFile(*cmPath)
	if err != nil {
		die("%v", err)
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		die("configmap: %v", err)
	}
	secrets := map[string]string{}
	if *secretsPath != "" {
		raw, err := os.ReadFile(*secretsPath)
		if err != nil {
			die("%v", err)
		}
		if err := json.Unmarshal(raw, &secrets); err != nil {
			die("secrets: %v", err)
		}
	}

	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")

	triggers := map[string][]condition{}
	templates := map[string]map[string][3]*texttemplate.Template{} // template -> service -> method/path/body
	methods := map[string]map[string]string{}
	services := map[string]webhookService{}
	var subscriptions []subscription
	context := map[string]any{"argocdUrl": "https://localhost:4000"}

	for key, value := range cm.Data {
		switch {
		case strings.HasPrefix(key, "trigger."):
			var conds []condition
			if err := yaml.Unmarshal([]byte(value), &conds); err != nil {
				die("%s: %v", key, err)
			}
			triggers[strings.TrimPrefix(key, "trigger.")] = conds
		case strings.HasPrefix(key, "template."):
			name := strings.TrimPrefix(key, "template.")
			var t notificationTemplate
			if err := yaml.Unmarshal([]byte(value), &t); err != nil {
				die("%s: %v", key, err)
			}
			templates[name] = map[string][3]*texttemplate.Template{}
			methods[name] = map[string]string{}
			for svc, w := range t.Webhook {
				body, err := texttemplate.New(name + svc).Funcs(funcs).Parse(w.Body)
				if err != nil {
					die("%s body: %v", key, err)
				}
				path, err := texttemplate.New(name + svc).Funcs(funcs).Parse(w.Path)
				if err != nil {
					die("%s path: %v", key, err)
				}
				templates[name][svc] = [3]*texttemplate.Template{nil, path, body}
				methods[name][svc] = w.Method
			}
		case strings.HasPrefix(key, "service.webhook."):
			substituted := keyPattern.ReplaceAllStringFunc(value, func(k string) string {
				if v, ok := secrets[k[1:]]; ok {
					return v
				}
				return k
			})
			var s webhookService
			if err := yaml.Unmarshal([]byte(substituted), &s); err != nil {
				die("%s: %v", key, err)
			}
			if s.RetryMax == 0 {
				s.RetryMax = 3
			}
			services[strings.TrimPrefix(key, "service.webhook.")] = s
		case key == "subscriptions":
			if err := yaml.Unmarshal([]byte(value), &subscriptions); err != nil {
				die("subscriptions: %v", err)
			}
		case key == "context":
			if err := yaml.Unmarshal([]byte(value), &context); err != nil {
				die("context: %v", err)
			}
		}
	}

	// Compile every condition as the engine does (a `when` that does not compile is fatal there too).
	compiled := map[string]*vm.Program{}
	for name, conds := range triggers {
		for _, c := range conds {
			for _, src := range []string{c.When, c.OncePer} {
				if src == "" {
					continue
				}
				prog, err := expr.Compile(src)
				if err != nil {
					die("trigger %s: %q: %v", name, src, err)
				}
				compiled[src] = prog
			}
		}
	}

	var history struct {
		Steps []struct {
			App   map[string]any `json:"app"`
			Patch map[string]any `json:"patch"`
		} `json:"steps"`
	}
	raw, err = os.ReadFile(*historyPath)
	if err != nil {
		die("%v", err)
	}
	if err := json.Unmarshal(raw, &history); err != nil {
		die("history: %v", err)
	}

	out := json.NewEncoder(os.Stdout)
	states := map[string]map[string]int64{} // per application: the notified-state annotation
	var app map[string]any
	for step, s := range history.Steps {
		if s.App != nil {
			app = s.App
		} else {
			patched, _ := mergePatch(app, s.Patch).(map[string]any)
			app = patched
		}
		// Work on a JSON round-trip, as the controller sees an unstructured object.
		buf, _ := json.Marshal(app)
		var obj map[string]any
		_ = json.Unmarshal(buf, &obj)
		appName := getString(obj, "metadata", "name")
		state := states[appName]
		if state == nil {
			state = map[string]int64{}
			states[appName] = state
		}

		// Destinations: trigger -> []destination.
		dests := map[string][]destination{}
		meta, _ := obj["metadata"].(map[string]any)
		annotations, _ := meta["annotations"].(map[string]any)
		const prefix = "notifications.argoproj.io/subscribe."
		for k, v := range annotations {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			parts := strings.SplitN(strings.TrimPrefix(k, prefix), ".", 2)
			if len(parts) != 2 {
				continue
			}
			value, _ := v.(string)
			for _, r := range strings.Split(value, ";") {
				dests[parts[0]] = append(dests[parts[0]], destination{parts[1], strings.TrimSpace(r)})
			}
		}
		for _, sub := range subscriptions {
			for _, t := range sub.Triggers {
				for _, r := range sub.Recipients {
					svc, rec, _ := strings.Cut(r, ":")
					dests[t] = append(dests[t], destination{svc, rec})
				}
			}
		}
		names := make([]string, 0, len(dests))
		for t := range dests {
			names = append(names, t)
		}
		sort.Strings(names)

		vars := func(d destination) map[string]any {
			v := map[string]any{
				"app": obj, "context": context, "appProject": map[string]any{},
				"time": timeExprs(), "strings": stringsExprs(),
			}
			if d.Service != "" {
				v["serviceType"] = d.Service
				v["recipient"] = d.Recipient
			}
			return v
		}

		for _, trigger := range names {
			conds, ok := triggers[trigger]
			if !ok {
				fmt.Fprintf(os.Stderr, "argocd-notify: step %d: trigger %q is not configured\n", step, trigger)
				continue
			}
			for i, c := range conds {
				condKey := fmt.Sprintf("[%d].%s", i, hash(c.When))
				triggered := false
				if c.When != "" {
					val, err := expr.Run(compiled[c.When], vars(destination{}))
					if err == nil {
						b, ok := val.(bool)
						triggered = ok && b
					} else {
						fmt.Fprintf(os.Stderr, "argocd-notify: step %d: %s: when: %v\n", step, trigger, err)
					}
				}
				oncePer := ""
				if triggered && c.OncePer != "" {
					if val, err := expr.Run(compiled[c.OncePer], vars(destination{})); err == nil {
						oncePer = fmt.Sprintf("%v", val)
					} else {
						fmt.Fprintf(os.Stderr, "argocd-notify: step %d: %s: oncePer: %v\n", step, trigger, err)
					}
				}
				for _, d := range dests[trigger] {
					key := fmt.Sprintf("%s:%s:%s:%s", trigger, condKey, d.Service, d.Recipient)
					if oncePer != "" {
						key = oncePer + ":" + key
					}
					_, notified := state[key]
					if !triggered {
						if notified && oncePer == "" {
							delete(state, key)
						}
						continue
					}
					if notified {
						continue
					}
					state[key] = time.Now().Unix()
					rec := send(step, appName, trigger, oncePer, d, c.Send, templates, methods, services, vars(d), *retryWait)
					if !rec.Delivered && oncePer == "" {
						delete(state, key)
					}
					_ = out.Encode(rec)
				}
			}
		}
	}
}

func send(step int, app, trigger, oncePer string, d destination, names []string,
	templates map[string]map[string][3]*texttemplate.Template, methods map[string]map[string]string,
	services map[string]webhookService, vars map[string]any, retryWait time.Duration) record {
	rec := record{Step: step, App: app, Trigger: trigger, OncePer: oncePer, Service: d.Service}
	svc, ok := services[d.Service]
	if !ok {
		rec.Error = fmt.Sprintf("notification service '%s' is not supported", d.Service)
		return rec
	}
	// Later templates override earlier ones for the same service, as FormatNotification does.
	method, path, body, found := "", "", "", false
	for _, name := range names {
		tpl, ok := templates[name]
		if !ok {
			rec.Error = fmt.Sprintf("template '%s' is not supported", name)
			return rec
		}
		t, ok := tpl[d.Service]
		if !ok {
			continue
		}
		var b, p bytes.Buffer
		if err := t[2].Execute(&b, vars); err != nil {
			rec.Error = "render: " + err.Error()
			return rec
		}
		if err := t[1].Execute(&p, vars); err != nil {
			rec.Error = "render: " + err.Error()
			return rec
		}
		method, path, body, found = methods[name][d.Service], p.String(), b.String(), true
	}
	if !found {
		rec.Error = "no webhook template for service " + d.Service
		return rec
	}
	if method == "" {
		method = http.MethodGet
	}
	url := svc.URL
	if path != "" {
		url = strings.TrimRight(url, "/") + "/" + strings.TrimLeft(path, "/")
	}
	rec.Method, rec.URL, rec.Body = method, url, body
	client := &http.Client{Timeout: 30 * time.Second}
	for attempt := 0; attempt <= svc.RetryMax; attempt++ {
		rec.Attempts = attempt + 1
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			rec.Error = err.Error()
			return rec
		}
		for _, h := range svc.Headers {
			req.Header.Set(h.Name, h.Value)
		}
		if svc.BasicAuth != nil {
			req.SetBasicAuth(svc.BasicAuth.Username, svc.BasicAuth.Password)
		}
		resp, err := client.Do(req)
		if err != nil {
			rec.Error = err.Error()
			time.Sleep(retryWait)
			continue
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		rec.Status, rec.Response, rec.Error = resp.StatusCode, string(data), ""
		if resp.StatusCode == 429 || (resp.StatusCode >= 500 && resp.StatusCode != 501) {
			time.Sleep(retryWait)
			continue
		}
		break
	}
	rec.Delivered = rec.Status >= 200 && rec.Status <= 299
	if !rec.Delivered && rec.Error == "" {
		rec.Error = fmt.Sprintf("request to %s has failed with error code %d", url, rec.Status)
	}
	return rec
}
