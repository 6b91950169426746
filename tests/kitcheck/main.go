// Command kitcheck checks the deploy kit's files with the libraries of the tools that read
// them, where the tools themselves cannot run here (no cluster, no Prometheus):
//
//	kitcheck kustomize DIR    renders DIR as `kubectl kustomize DIR` does (kustomize's own
//	                          library), the manifests on stdout
//	kitcheck manifests FILE   decodes every document of FILE strictly into its Kubernetes API
//	                          type (k8s.io/api): an unknown or misspelt field is an error
//	kitcheck rules FILE...    parses Prometheus rule files as `promtool check rules` does
//	                          (expressions, durations, label and annotation templates)
//
// Problems go to stderr, one a line; the exit code is 1 if there was any, 2 for a usage error.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: kitcheck kustomize DIR | manifests FILE | rules FILE...")
		os.Exit(2)
	}
	var problems []error
	switch os.Args[1] {
	case "kustomize":
		problems = kustomize(os.Args[2], os.Stdout)
	case "manifests":
		problems = manifests(os.Args[2])
	case "rules":
		problems = rules(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "kitcheck: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	for _, problem := range problems {
		fmt.Fprintln(os.Stderr, problem)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}

func kustomize(dir string, out io.Writer) []error {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return []error{err}
	}
	rendered, err := resources.AsYaml()
	if err != nil {
		return []error{err}
	}
	_, err = out.Write(rendered)
	if err != nil {
		return []error{err}
	}
	return nil
}

func manifests(path string) []error {
	content, err := os.ReadFile(path)
	if err != nil {
		return []error{err}
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return []error{err}
		}
	}
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufioReader(content))
	var problems []error
	for n := 1; ; n++ {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return append(problems, fmt.Errorf("%s: document %d: %w", path, n, err))
		}
		if len(bytes.TrimSpace(document)) == 0 {
			continue
		}
		object, kind, err := strict.Decode(document, nil, nil)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: document %d: %w", path, n, err))
			continue
		}
		fmt.Printf("%s %s: OK\n", kind.Kind, name(object))
	}
	return problems
}

func name(object runtime.Object) string {
	if named, ok := object.(interface{ GetName() string }); ok {
		return named.GetName()
	}
	return "?"
}

func rules(paths []string) []error {
	var problems []error
	for _, path := range paths {
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation,
			parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
		problems = append(problems, errs...)
		if len(errs) == 0 && groups != nil {
			count := 0
			for _, group := range groups.Groups {
				count += len(group.Rules)
			}
			fmt.Printf("%s: %d rules OK\n", path, count)
		}
	}
	return problems
}

func bufioReader(content []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(content)) }
