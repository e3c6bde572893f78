"""config.py - the ringpost.conf a test runs with: config_text() writes the
sections from a few dicts; API_KEYS are the bearer tokens of its [api]."""

# Bearer tokens of the [api] section that config_text writes with api_port.
API_KEYS = ("test-key-one", "test-key-two")
API_KEY = API_KEYS[0]


def config_text(*, hostname="mta.test.example", data_dir="spool", shards=2, submission_port,
                routes, server=None, submission=None, queue=None, domain_defaults=None,
                domains=None, api_port=None, api=None, extra=""):
    """An ringpost.conf for a test. routes: {domain: "127.0.0.1:port"}.
    The other dicts add or override keys in their section; domains maps a
    domain name to extra keys for its section. api_port adds an [listen] api
    listener; api adds [api] keys (keys = API_KEYS when api_port is set).
    A value of None drops the key, e.g. domain_defaults={"max_connections":
    None} for the shipped default instead of the tests' 20."""
    sec = {
        "server": {"hostname": hostname, "data_dir": data_dir, "shards": str(shards)},
        "listen": {"submission": f"127.0.0.1:{submission_port}"},
        "submission": {"networks": "127.0.0.0/8, ::1"},
        "api": {},
        "queue": {"retry": "1s, 2s", "max_age": "1h"},
        "domain *": {"connect_timeout": "2s", "max_connections": "20"},
    }
    if api_port:
        sec["listen"]["api"] = f"127.0.0.1:{api_port}"
        sec["api"]["keys"] = ", ".join(API_KEYS)
    for name, d in (("server", server), ("submission", submission), ("queue", queue),
                    ("domain *", domain_defaults), ("api", api)):
        if d:
            sec[name].update({k: _value(v) for k, v in d.items()})
    for dom, addr in routes.items():
        sec[f"domain {dom}"] = {"route": addr}
    for dom, d in (domains or {}).items():
        sec.setdefault(f"domain {dom}", {}).update({k: _value(v) for k, v in d.items()})
    for keys in sec.values():
        for k in [k for k, v in keys.items() if v is None]:
            del keys[k]
    if not sec["api"]:
        del sec["api"]
    out = ["; written by tests/integration/harness/config.py"]
    for name, keys in sec.items():
        out.append(f"[{name}]")
        out += [f"{k} = {v}" for k, v in keys.items()]
        out.append("")
    return "\n".join(out) + extra


def _value(v):
    """A key's value as config text; None stays None (the key is dropped)."""
    return None if v is None else str(v)
