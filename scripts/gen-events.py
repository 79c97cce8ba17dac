#!/usr/bin/env python3
"""Writes events/*.json: Lambda function URL (payload 2.0) events, one per source and status,
authenticated with the demo secrets below. Run it after changing a body; tests check every file.

Demo secrets (never use them for a real deployment):
  generic_webhook_secret = demo-generic-secret
  argocd_webhook_secret  = demo-argocd-secret
"""
import json
import pathlib

SHA = "c0ffee1234567890abcdef1234567890abcdef12"
OUT = pathlib.Path(__file__).resolve().parent.parent / "events"
SECRETS = {"generic": "demo-generic-secret", "argocd": "demo-argocd-secret"}


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


def argocd(phase, health):
    body = json.dumps({
        "app": "example-api", "phase": phase, "health": health, "revision": SHA, "revisions": [],
        "targetRevision": "main", "externalURLs": ["https://api.example.com"],
    })
    return event("/hooks/argocd", "project=42&environment=production", {"authorization": "Bearer " + SECRETS["argocd"]}, body)


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
}

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, ev in FILES.items():
        (OUT / name).write_text(json.dumps(ev, indent=2) + "\n")
    print(f"wrote {len(FILES)} files to {OUT}")
