// Command argocd-lua runs an Argo CD resource health script (deploy/argocd/health.lua) in
// gopher-lua, set up as Argo CD's util/lua VM sets it up for a health.lua from argocd-cm
// (resource.customizations.health.<group>_<kind>, useOpenLibs false):
//
//   - lua.NewState with SkipOpenLibs, then only the package, base and table libraries opened
//     (Argo CD also opens its own "safe" os library, which offers os.time/os.date only; it is
//     not opened here, so a script that uses os fails here rather than passing by accident);
//
//   - the object as the global `obj`, converted value by value as Argo CD's decodeValue does
//     (numbers as Lua numbers, lists as array tables, maps as hash tables, null as nil);
//
//   - a 1 second deadline on the script (Argo CD's context timeout);
//
//   - an object with metadata.deletionTimestamp is Progressing, "Pending deletion", without
//     running the script (gitops-engine's health.GetResourceHealth checks that first);
//
//   - the value the script returns must be a table; its status must be one of Argo CD's health
//     codes, otherwise the result is Unknown with "Lua returned an invalid health status".
//
//     argocd-lua SCRIPT < objects.yaml
//
// stdin holds one or more objects (JSON or YAML documents, or a *List with items). For each
// object one JSON line goes to stdout: {"name":"x","status":"Healthy","message":"..."}, or
// {"name":"x","status":"Unknown","message":ERROR,"error":ERROR} if the script failed (Argo CD
// shows Unknown with the error; the exit code is then 1).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

var healthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

type line struct {
	Name    string `json:"name"`
	Status  string `json:"status,omitempty"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func objects(r io.Reader) ([]map[string]interface{}, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
	var out []map[string]interface{}
	for {
		var doc json.RawMessage
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		// Integers as int64, as in the objects Argo CD's cluster cache holds.
		var raw map[string]interface{}
		if err := utiljson.Unmarshal(doc, &raw); err != nil {
			return nil, err
		}
		if len(raw) == 0 {
			continue
		}
		kind, _ := raw["kind"].(string)
		if items, ok := raw["items"].([]interface{}); ok && strings.HasSuffix(kind, "List") {
			for _, item := range items {
				if m, ok := item.(map[string]interface{}); ok {
					out = append(out, m)
				}
			}
			continue
		}
		out = append(out, raw)
	}
}

func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func run(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret := l.Get(-1)
	tbl, ok := ret.(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	status, message := "", ""
	if s, ok := tbl.RawGetString("status").(lua.LString); ok {
		status = string(s)
	}
	if m, ok := tbl.RawGetString("message").(lua.LString); ok {
		message = string(m)
	}
	if !healthCodes[status] {
		return "Unknown", "Lua returned an invalid health status", nil
	}
	return status, message, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua SCRIPT.lua < objects.(json|yaml)")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: %v\n", err)
		os.Exit(2)
	}
	objs, err := objects(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: reading stdin: %v\n", err)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	code := 0
	for _, obj := range objs {
		l := line{}
		if md, ok := obj["metadata"].(map[string]interface{}); ok {
			l.Name, _ = md["name"].(string)
		}
		var status, message string
		var err error
		if md, ok := obj["metadata"].(map[string]interface{}); ok && md["deletionTimestamp"] != nil {
			status, message = "Progressing", "Pending deletion"
		} else {
			status, message, err = run(string(script), obj)
		}
		if err != nil {
			l.Status, l.Message, l.Error = "Unknown", err.Error(), err.Error()
			code = 1
		} else {
			l.Status, l.Message = status, message
		}
		if err := enc.Encode(l); err != nil {
			fmt.Fprintf(os.Stderr, "argocd-lua: %v\n", err)
			os.Exit(2)
		}
	}
	os.Exit(code)
}
