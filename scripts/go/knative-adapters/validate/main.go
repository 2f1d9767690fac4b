// Command knative-validate runs Knative's own code on Stash's manifests where the Knative
// controllers and webhooks are not running (the tests' control plane has only the CRDs, whose
// schemas catch types, not meaning):
//
//	knative-validate check FILE...   admission: SetDefaults then Validate, as the webhooks do on create,
//	                                 for every Broker, Trigger, ApiServerSource, PingSource and Service
//	                                 (serving.knative.dev) in the YAML files; other kinds are skipped.
//	                                 One JSON line per object: {file, kind, namespace, name, ok, errors,
//	                                 warnings}. Exit 1 when one is rejected.
//	knative-validate route FILE...   routing: reads CloudEvents (structured JSON, one a line) on stdin
//	                                 and prints, per event, the Triggers in the files whose filters let
//	                                 it through, decided by the Broker's filter code
//	                                 (pkg/broker/filter/filter_handler.go filterEvent). One JSON line per
//	                                 event: {id, triggers: ["namespace/name", ...]}.
//
// FILE may be "-" for stdin with check. Exit 2 when an input cannot be read or decoded.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/eventing/pkg/eventfilter"
	"knative.dev/eventing/pkg/eventfilter/attributes"
	"knative.dev/eventing/pkg/eventfilter/subscriptionsapi"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// object is what the webhooks call: defaulting then validation.
type object interface {
	apis.Defaultable
	apis.Validatable
}

func newObject(apiVersion, kind string) object {
	switch apiVersion + "/" + kind {
	case "eventing.knative.dev/v1/Broker":
		return &v1.Broker{}
	case "eventing.knative.dev/v1/Trigger":
		return &v1.Trigger{}
	case "sources.knative.dev/v1/ApiServerSource":
		return &sourcesv1.ApiServerSource{}
	case "sources.knative.dev/v1/PingSource":
		return &sourcesv1.PingSource{}
	case "serving.knative.dev/v1/Service":
		return &servingv1.Service{}
	}
	return nil
}

type document struct {
	file       string
	apiVersion string
	kind       string
	namespace  string
	name       string
	raw        []byte
}

type checkResult struct {
	File      string `json:"file"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	OK        bool   `json:"ok"`
	Errors    string `json:"errors,omitempty"`
	// Warnings are admitted by the webhook (returned to the client as warnings).
	Warnings string `json:"warnings,omitempty"`
}

type routeResult struct {
	ID       string   `json:"id"`
	Triggers []string `json:"triggers"`
}

func main() {
	if len(os.Args) < 3 || (os.Args[1] != "check" && os.Args[1] != "route") {
		fmt.Fprintln(os.Stderr, "usage: knative-validate check FILE... | knative-validate route FILE... < events.jsonl")
		os.Exit(2)
	}
	// Knative's defaults: the feature flags of config-features as shipped.
	flags, err := feature.NewFlagsConfigFromMap(map[string]string{})
	if err != nil {
		fail("building Knative's default feature flags: %v", err)
	}
	ctx := apis.WithinCreate(feature.ToContext(context.Background(), flags))
	docs := readDocuments(os.Args[2:])
	out := json.NewEncoder(os.Stdout)
	if os.Args[1] == "check" {
		if !check(ctx, docs, out) {
			os.Exit(1)
		}
		return
	}
	route(ctx, docs, out)
}

func check(ctx context.Context, docs []document, out *json.Encoder) bool {
	allOK := true
	for _, doc := range docs {
		obj := newObject(doc.apiVersion, doc.kind)
		if obj == nil {
			continue
		}
		r := checkResult{File: doc.file, Kind: doc.kind, Namespace: doc.namespace, Name: doc.name, OK: true}
		// The webhooks decode with unknown fields disallowed: so does this.
		if err := sigsyaml.UnmarshalStrict(doc.raw, obj); err != nil {
			r.OK, r.Errors = false, "decoding: "+err.Error()
		} else {
			obj.SetDefaults(ctx)
			if fe := obj.Validate(ctx); fe != nil {
				if errs := fe.Filter(apis.ErrorLevel); errs != nil {
					r.OK, r.Errors = false, errs.Error()
				}
				if warnings := fe.Filter(apis.WarningLevel); warnings != nil {
					r.Warnings = warnings.Error()
				}
			}
		}
		allOK = allOK && r.OK
		if err := out.Encode(r); err != nil {
			fail("writing the result: %v", err)
		}
	}
	return allOK
}

func route(ctx context.Context, docs []document, out *json.Encoder) {
	var triggers []*v1.Trigger
	for _, doc := range docs {
		if doc.apiVersion != "eventing.knative.dev/v1" || doc.kind != "Trigger" {
			continue
		}
		t := &v1.Trigger{}
		if err := sigsyaml.UnmarshalStrict(doc.raw, t); err != nil {
			fail("decoding Trigger %s/%s in %s: %v", doc.namespace, doc.name, doc.file, err)
		}
		t.SetDefaults(ctx)
		triggers = append(triggers, t)
	}
	logger := zap.NewNop()
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		if len(bytes.TrimSpace(lines.Bytes())) == 0 {
			continue
		}
		event := cloudevents.NewEvent()
		if err := json.Unmarshal(lines.Bytes(), &event); err != nil {
			fail("decoding a CloudEvent (structured JSON) from stdin: %v", err)
		}
		r := routeResult{ID: event.ID(), Triggers: []string{}}
		for _, t := range triggers {
			if filterEvent(ctx, logger, t, event) != eventfilter.FailFilter {
				r.Triggers = append(r.Triggers, t.Namespace+"/"+t.Name)
			}
		}
		sort.Strings(r.Triggers)
		if err := out.Encode(r); err != nil {
			fail("writing the result: %v", err)
		}
	}
	if err := lines.Err(); err != nil {
		fail("reading events from stdin: %v", err)
	}
}

// filterEvent is the Broker filter's choice (filter_handler.go filterEvent, without its cache).
func filterEvent(ctx context.Context, logger *zap.Logger, t *v1.Trigger, event cloudevents.Event) eventfilter.FilterResult {
	switch {
	case len(t.Spec.Filters) > 0:
		return subscriptionsapi.CreateSubscriptionsAPIFilters(logger, t.Spec.Filters).Filter(ctx, event)
	case t.Spec.Filter != nil:
		return attributes.NewAttributesFilter(t.Spec.Filter.Attributes).Filter(ctx, event)
	default:
		return eventfilter.NoFilter
	}
}

func readDocuments(files []string) []document {
	var docs []document
	for _, file := range files {
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			fail("reading %s: %v", file, err)
		}
		reader := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			raw, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fail("splitting %s into YAML documents: %v", file, err)
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"metadata"`
			}
			if err := sigsyaml.Unmarshal(raw, &meta); err != nil {
				fail("decoding a document of %s: %v", file, err)
			}
			docs = append(docs, document{file, meta.APIVersion, meta.Kind, meta.Metadata.Namespace, meta.Metadata.Name, raw})
		}
	}
	return docs
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "knative-validate: "+format+"\n", args...)
	os.Exit(2)
}
