"""`hwmatrix site` (the store's results as a static site) and `hwmatrix serve` (the same pages live)."""
from __future__ import annotations

from coordinator.cli.options import open_store, store_options
from coordinator.errors import EXIT_OK


def add_parser(sub) -> None:
    site = sub.add_parser("site", help="write the store's results as a static site (works offline, from file://)")
    store_options(site)
    site.add_argument("--out", required=True, help="the folder to write; DIR/index.html is its front page")
    site.set_defaults(func=run)


def run(args) -> int:
    from coordinator.site.static import write_site

    written = write_site(open_store(args), args.out)
    size = sum(written.pages.values())
    print(f"wrote {len(written.pages)} files ({size / 1e6:.1f} MB) for {written.records} records to {args.out} "
          f"in {written.seconds:.1f} s; open {args.out}/index.html"
          + (f"; {written.skipped} stored object(s) skipped, listed on the front page" if written.skipped else ""))
    return EXIT_OK


def add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="serve the site's pages live from the store (read-only, 127.0.0.1)")
    store_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.set_defaults(func=run_serve)


def run_serve(args) -> int:
    from coordinator.site.app import serve

    store = open_store(args)
    print(f"serving {store.url} read-only on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    serve(store, args.host, args.port)
    return EXIT_OK
