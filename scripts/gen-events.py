#!/usr/bin/env python3
"""Writes events/*.json: Lambda function URL (payload 2.0) events, one per source and status,
authenticated with the demo secrets below. Run it after changing a body; tests check every file.

Demo secrets (never use them for a real deployment):
  generic_webhook_secret = demo-generic-secret
  argocd_webhook_secret  = demo-argocd-secret
  heroku_webhook_secret  = demo-heroku-secret
  flux_webhook_secret    = demo-flux-secret
  vercel_webhook_secret  = demo-vercel-secret
  netlify_webhook_secret = demo-netlify-secret
"""
import base64
import hashlib
import hmac
import json
import pathlib

SHA = "c0ffee1234567890abcdef1234567890abcdef12"
OUT = pathlib.Path(__file__).resolve().parent.parent / "events"
SECRETS = {name: f"demo-{name}-secret" for name in ["generic", "argocd", "heroku", "flux", "vercel", "netlify"]}


def event(path, query, headers, body):
    headers = {
        "content-type": "application/json",
        "host": "abcdefghij.lambda-url.us-east-1.on.aws",
        "user-agent": "demo",
        "x-forwarded-proto": "https",
        **headers,
    }
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "demo"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795608000000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def generic(status):
    body = json.dumps({"environment": "production", "sha": SHA, "ref": "main", "tag": False, "status": status})
    return event("/hooks/generic", "project=42", {"authorization": "Bearer " + SECRETS["generic"]}, body)


def argocd(phase, health, message=""):
    # The README template's fields (Sprig's toJson sorts the keys); a running sync has no finishedAt yet.
    finished = "" if phase in ("Running", "Terminating") else "2026-10-02T11:00:42Z"
    source = {"repoURL": "https://gitlab.example.com/group/app.git", "targetRevision": "main", "path": "deploy"}
    body = json.dumps({
        "annotations": {"gitlab-deploy-bridge/project": "42", "gitlab-deploy-bridge/environment": "production"},
        "app": "example-api", "environment": "production", "externalURLs": ["https://api.example.com"],
        "finishedAt": finished, "health": health, "healthAt": "2026-10-02T11:00:50Z", "images": [], "message": message, "phase": phase,
        "revision": SHA, "revisions": [], "source": source, "sources": [], "startedAt": "2026-10-02T11:00:00Z",
    }, sort_keys=True, separators=(",", ":"))
    return event("/hooks/argocd", "project=42&environment=production", {"authorization": "Bearer " + SECRETS["argocd"]}, body)


def mac(name, body, digest):
    return hmac.new(SECRETS[name].encode(), body.encode(), digest)


def heroku(resource, status, action="update"):
    # Each delivery is stamped when its resource last changed: a build starts, then fails or
    # is released.
    updated = {"pending": "2026-10-02T08:00:00Z", "failed": "2026-10-02T08:01:10Z", "succeeded": "2026-10-02T08:02:05Z"}[status]
    meta = {"attempt": {"id": "a1"}, "delivery": {"id": f"d-{resource}-{status}"}, "event": {"id": "e1", "include": f"api:{resource}"}, "webhook": {"id": "w1"}}
    app = {"id": "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f", "name": "example-api"}
    if resource == "build":
        data = {"id": "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b", "status": status, "app": app, "buildpacks": [{"url": "heroku/python", "name": "heroku/python"}],
                "output_stream_url": "https://build-output.heroku.com/streams/7e/7e8f9a0b", "release": None, "slug": None, "stack": "heroku-24",
                "source_blob": {"checksum": None, "url": "https://example-source.invalid/archive.tar.gz", "version": SHA, "version_description": "Add health endpoint"},
                "user": {"email": "ops@example.com", "id": "5a6b7c8d"}, "created_at": "2026-10-02T08:00:00Z", "updated_at": updated}
    else:
        data = {"id": "9f0a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c", "version": 17, "status": status, "description": "Deploy " + SHA[:8], "current": True,
                "app": app, "slug": {"id": "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a"}, "user": {"email": "ops@example.com", "id": "5a6b7c8d"},
                "output_stream_url": "https://release-output.heroku.com/streams/9f/9f0a1b2c", "addon_plan_names": [],
                "created_at": "2026-10-02T08:01:20Z", "updated_at": updated}
    body = json.dumps({"id": "0b2f1c3e-8d7a-4e6f-9a1b-2c3d4e5f6a7b", "action": action, "actor": {"email": "ops@example.com", "id": "5a6b7c8d"},
                       "created_at": "2026-10-02T08:00:00Z", "updated_at": updated, "published_at": updated,
                       "previous_data": {}, "resource": resource, "sequence": None, "version": "application/vnd.heroku+json; version=3",
                       "data": data, "webhook_metadata": meta})
    sig = base64.b64encode(mac("heroku", body, hashlib.sha256).digest()).decode()
    return event("/hooks/heroku", "project=42", {"heroku-webhook-hmac-sha256": sig}, body)


def flux(reason, severity):
    at = {"Progressing": "2026-10-02T09:00:00Z", "ReconciliationSucceeded": "2026-10-02T09:01:30Z"}.get(reason, "2026-10-02T09:05:00Z")
    body = json.dumps({
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "example-api", "uid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                           "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "resourceVersion": "102934"},
        "severity": severity, "timestamp": at, "message": f"{reason} for revision main@sha1:{SHA}", "reason": reason,
        "metadata": {"revision": f"main@sha1:{SHA}", "summary": "production cluster"},
        "reportingController": "kustomize-controller", "reportingInstance": "kustomize-controller-5d8b9c7f6-x2x9z",
    })
    sig = "sha256=" + mac("flux", body, hashlib.sha256).hexdigest()
    return event("/hooks/flux", "project=42&environment=production", {"x-signature": sig, "gotk-component": "kustomize-controller"}, body)


def vercel(kind, target):
    body = json.dumps({
        "id": "evt_" + kind.split(".")[1], "type": kind, "region": "fra1",
        "createdAt": 1759395600000 if kind == "deployment.created" else 1759395720000,
        "payload": {"team": {"id": "team_example"}, "user": {"id": "user_example"}, "project": {"id": "prj_example"},
                    "deployment": {"id": "dpl_9Zx8Cv7Bn", "name": "example-web", "url": "example-web-9zx8cv7bn.vercel.app",
                                   "meta": {"gitlabCommitSha": SHA, "gitlabCommitRef": "main", "gitlabProjectPath": "example/web"},
                                   "inspectorUrl": "https://vercel.com/example/example-web/9Zx8Cv7Bn"},
                    "links": {"deployment": "https://vercel.com/example/example-web/9Zx8Cv7Bn", "project": "https://vercel.com/example/example-web"},
                    "target": target, "name": "example-web", "url": "example-web-9zx8cv7bn.vercel.app"},
    })
    return event("/hooks/vercel", "project=42", {"x-vercel-signature": mac("vercel", body, hashlib.sha1).hexdigest()}, body)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def netlify(event_name, state, context):
    body = json.dumps({
        "id": "65f0a1b2c3d4e5f600112233", "site_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "build_id": "65f0a1b2c3d4e5f600112234",
        "state": state, "name": "example-docs", "url": "https://docs.example.com", "ssl_url": "https://docs.example.com",
        "admin_url": "https://app.netlify.com/sites/example-docs", "deploy_url": "http://65f0a1b2c3d4e5f600112233--example-docs.netlify.app",
        "deploy_ssl_url": "https://65f0a1b2c3d4e5f600112233--example-docs.netlify.app",
        "created_at": "2026-10-02T10:00:00.000Z", "updated_at": "2026-10-02T10:00:05.000Z" if state == "building" else "2026-10-02T10:02:00.000Z",
        "commit_ref": SHA, "branch": "main", "context": context, "error_message": "Build script returned non-zero exit code" if state == "error" else None,
        "title": "Add health endpoint", "review_id": None,
    })
    signing_input = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64url(
        json.dumps({"iss": "netlify", "sha256": hashlib.sha256(body.encode()).hexdigest()}).encode())
    jws = signing_input + "." + b64url(mac("netlify", signing_input, hashlib.sha256).digest())
    return event("/hooks/netlify", "project=42", {"x-webhook-signature": jws, "x-netlify-event": event_name}, body)


FILES = {
    "generic-running.json": generic("running"),
    "generic-success.json": generic("success"),
    "generic-failed.json": generic("failed"),
    "generic-canceled.json": generic("canceled"),
    "facade-success.json": event(
        "/api/v4/projects/group%2Fapp/deployments", "", {"private-token": SECRETS["generic"]},
        json.dumps({"environment": "staging", "sha": SHA, "ref": "main", "tag": "false", "status": "success"}),
    ),
    "argocd-running.json": argocd("Running", "Progressing"),
    "argocd-deployed.json": argocd("Succeeded", "Healthy"),
    "argocd-sync-failed.json": argocd("Failed", "Healthy"),
    "argocd-degraded.json": argocd("Succeeded", "Degraded"),
    "argocd-terminated.json": argocd("Failed", "Healthy", "Operation terminated"),
    "heroku-build-pending.json": heroku("build", "pending", "create"),
    "heroku-build-failed.json": heroku("build", "failed"),
    "heroku-release-succeeded.json": heroku("release", "succeeded"),
    "flux-progressing.json": flux("Progressing", "info"),
    "flux-reconciliation-succeeded.json": flux("ReconciliationSucceeded", "info"),
    "flux-health-check-failed.json": flux("HealthCheckFailed", "error"),
    "vercel-deployment-created.json": vercel("deployment.created", "production"),
    "vercel-deployment-succeeded.json": vercel("deployment.succeeded", "production"),
    "vercel-deployment-error-preview.json": vercel("deployment.error", None),
    "vercel-deployment-canceled.json": vercel("deployment.canceled", "production"),
    "netlify-deploy-building.json": netlify("deploy_building", "building", "production"),
    "netlify-deploy-ready.json": netlify("deploy_created", "ready", "production"),
    "netlify-deploy-error.json": netlify("deploy_failed", "error", "production"),
}

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, ev in FILES.items():
        (OUT / name).write_text(json.dumps(ev, indent=2) + "\n")
    print(f"wrote {len(FILES)} files to {OUT}")
