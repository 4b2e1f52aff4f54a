"""Deferred modules: a build never imports requests, and whoever does use a deferred module
gets the real one, whichever way it imports it, from however many threads at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, SAMPLES


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PUBLISH_IMAGE_SIZES": "local", "PATH": "/usr/bin:/bin"})


def test_a_build_loads_none_of_the_modules_it_does_not_use(tmp_path):
    done = run(f"""
        import sys
        from pipeline import build, settings
        from pathlib import Path
        build.build({str(SAMPLES['en'])!r}, settings.load(Path('.')), {str(tmp_path / 'out')!r})
        loaded = [name for name in ('requests', 'urllib3', 'soupsieve', 'chardet',
                                    'charset_normalizer', 'urllib.request',
                                    'importlib.metadata') if name in sys.modules
                  and not type(sys.modules[name]).__name__ == '_Deferred']
        print(loaded)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "out" / "email.html").read_text("utf-8").startswith("<!doctype html>")


def test_deferred_modules_work_however_they_are_imported():
    done = run("""
        import sys
        from pipeline import lazy
        lazy.defer('requests', 'soupsieve', 'no_such_module_anywhere')
        assert 'no_such_module_anywhere' not in sys.modules
        try:
            import no_such_module_anywhere
        except ImportError:
            pass
        else:
            raise SystemExit('a missing module imported')
        import requests
        assert lazy.is_deferred('requests')
        from requests.exceptions import Timeout          # a submodule
        import requests.adapters                         # another, by name
        assert issubclass(Timeout, requests.RequestException)
        assert requests.Session is sys.modules['requests'].Session
        assert requests.adapters.HTTPAdapter
        import soupsieve
        from bs4 import BeautifulSoup
        soup = BeautifulSoup('<p class=a>x</p><p>y</p>', 'html.parser')
        assert [p.get_text() for p in soup.select('p.a')] == ['x']   # soupsieve at work
        print('ok')
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_first_use_from_many_threads_at_once_loads_the_module_once():
    done = run("""
        import sys, threading
        from pipeline import lazy
        lazy.defer('requests')
        import requests
        barrier = threading.Barrier(16)
        seen, errors = [], []

        def use():
            barrier.wait()
            try:
                seen.append(requests.Session)
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=use) for _ in range(16)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert not errors, errors
        assert len(set(map(id, seen))) == 1 and len(seen) == 16
        print('ok')
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_deferred_modules_of_packages_already_imported_work_however_they_are_imported():
    done = run("""
        import sys
        import urllib.parse
        from pipeline import lazy
        lazy.defer('urllib.request', 'importlib.metadata')
        assert lazy.is_deferred('urllib.request') and lazy.is_deferred('importlib.metadata')
        import urllib.request
        from importlib import metadata
        assert lazy.is_deferred('urllib.request')            # importing is not using
        assert metadata.version('jinja2')                     # an attribute loads it
        assert not lazy.is_deferred('importlib.metadata')
        import importlib.metadata._meta                       # its own modules import
        from urllib.request import Request                    # from-import loads it
        assert Request('http://127.0.0.1/').get_method() == 'GET'
        assert urllib.request.urlopen is sys.modules['urllib.request'].urlopen
        import cssutils                                        # what imports them at build
        assert cssutils.parseString('p { color: red }').cssRules[0].style.color == 'red'
        print('ok')
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_module_of_a_deferred_package_imported_first_is_the_one_the_package_uses():
    """`import importlib.metadata._meta` before anything of importlib.metadata is used
    (as after a build in the same process) gives the very module the package itself uses,
    not a second copy with classes of its own."""
    done = run("""
        import sys
        from pipeline import lazy
        lazy.defer('importlib.metadata')
        import importlib.metadata._meta as meta
        import importlib.metadata
        assert meta.PackageMetadata is importlib.metadata.PackageMetadata  # ran once
        assert sys.modules['importlib.metadata._meta'] is meta
        assert importlib.metadata.version('jinja2')
        print('ok')
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


ENTITY_TEXT = ("<p title='&quot;x&quot; &amp; ≠'>a &amp; b &eacute; &rarr; &NotGreaterFullEqual; "
               "≧̸ ≧ fj &fjlig; &lt;&gt; ©®™ — “quotes” 中文 &#x1F600; &unknown; & bare</p>")


def _formatted(patched: bool) -> str:
    return run(f"""
        import json
        from concurrent.futures import ThreadPoolExecutor
        from pipeline import lazy
        if {patched!r}:
            lazy.entity_patterns_on_use()
        from bs4 import BeautifulSoup
        def one(_):
            soup = BeautifulSoup({ENTITY_TEXT!r}, "html.parser")
            return [soup.decode(formatter=f) for f in ("minimal", "html", "html5", None)]
        with ThreadPoolExecutor(8) as pool:  # the first use from many threads at once
            results = list(pool.map(one, range(16)))
        assert all(r == results[0] for r in results)
        print(json.dumps(results[0]))
    """)


def test_entity_patterns_compiled_on_use_format_as_compiled_at_once():
    """BeautifulSoup's entity patterns, made lazy for the build, give every formatter's
    output exactly as BeautifulSoup's own (in a process that never made them lazy)."""
    patched, plain = _formatted(True), _formatted(False)
    assert patched.returncode == 0 and plain.returncode == 0, patched.stderr + plain.stderr
    assert patched.stdout == plain.stdout
    html_formatted = json.loads(patched.stdout)[1]
    assert "&eacute;" in html_formatted and "&ngeqq; &ngeqq; &geqq;" in html_formatted
