"""See what a conversion made, in the browser: the manifests, the rejections by reason with examples, and the records
page by page — frames playing at their rate, history and target frames marked, the text, the controls plotted, the
key back to the source episode — with filters by source, text and rejection reason.

    unisim view demo-output/clips/tabletop        # open http://127.0.0.1:8473/
    unisim view gs://bucket/clips/lt gs://bucket/clips/rt1 --port 0

Only the manifests are read up front; each page reads the shards it shows (shards/view.py). The server binds
127.0.0.1 unless told otherwise and takes the same tokens and TLS options as `unisim serve` (with tokens, open the
page as /?access_token=TOKEN)."""

from __future__ import annotations

import dataclasses
import re

from unisim.schemas.options import add_flags, from_flags, option


@dataclasses.dataclass(frozen=True)
class ViewOptions:
    port: int = option(8473, "port; 0: any free port")


def add_arguments(parser) -> None:
    from unisim.simulator.serving.web import AccessOptions

    parser.add_argument("directories", nargs="+", metavar="DIR",
                        help="`unisim convert` output directories (local, gs:// or any fsspec path); several are "
                             "shown together, each a source")
    add_flags(parser, ViewOptions)
    add_flags(parser.add_argument_group("access"), AccessOptions)


def routes(viewer) -> list:
    """The viewer's HTTP routes over a `shards.view.Viewer`: the page, and the JSON (or raw RGB) it asks for. Bad
    parameters answer 400, a record out of range 404, data that is not what the manifest says (a missing or
    truncated shard, a record that does not decode) 409 with the reader's message."""
    from unisim.schemas.errors import UserError
    from unisim.schemas.record import RecordError
    from unisim.shards import view
    from unisim.simulator.serving.web import ServerError

    with open(view.PAGE, "rb") as f:
        page = f.read()

    def number(query: dict, name: str, default: int | None) -> int | None:
        value = query.get(name, "")
        if value == "":
            return default
        if not (value.isascii() and value.isdigit()):
            raise ServerError(400, f"{name} must be a whole number >= 0, not {value[:40]!r}")
        return int(value)

    def answered(handler):
        def route(request, *groups):
            try:
                return handler(request.query, *groups)
            except view.RequestError as e:
                raise ServerError(404, str(e)) from None
            except (UserError, RecordError, OSError) as e:  # the data is not what its manifest says
                raise ServerError(409, str(e)) from None
        return route

    def get_page(query):
        return 200, (page, "text/html; charset=utf-8")

    def get_summary(query):
        return 200, viewer.summary()

    def get_rejections(query):
        return 200, viewer.rejections(number(query, "source", None), query.get("reason") or None,
                                      number(query, "examples", view.EXAMPLES))

    def get_records(query):
        return 200, viewer.records(number(query, "source", None), query.get("text", ""), number(query, "start", 0),
                                   number(query, "limit", view.PAGE_SIZE))

    def get_frames(query, source, index):  # uint8 RGB [frames, height, width, 3]: the record's JSON gives the shape
        return 200, (viewer.frames(int(source), int(index)).tobytes(), "application/octet-stream")

    return [("GET", re.compile(r"/(?:index\.html)?"), answered(get_page)),
            ("GET", re.compile(r"/api/summary"), answered(get_summary)),
            ("GET", re.compile(r"/api/rejections"), answered(get_rejections)),
            ("GET", re.compile(r"/api/records"), answered(get_records)),
            ("GET", re.compile(r"/api/sources/(\d{1,9})/records/(\d{1,12})/frames"), answered(get_frames))]


def serve_viewer(directories, *, host: str = "127.0.0.1", port: int = 8473, **server_options):
    """(a started WebServer answering the viewer's routes over `directories`, its `shards.view.Viewer`): stop the
    server, then close the viewer. `server_options` go to WebServer (credentials, insecure, limits)."""
    from unisim.shards.view import Viewer
    from unisim.simulator.serving.web import WebServer

    viewer = Viewer(directories)
    try:
        return WebServer(routes(viewer), host=host, port=port, **server_options).start(), viewer
    except BaseException:
        viewer.close()
        raise


def run(args, _rest) -> int:
    from unisim.simulator.serving.web import AccessOptions, serve_forever

    options, access = from_flags(ViewOptions, args), from_flags(AccessOptions, args)
    credentials = access.credentials()
    server, viewer = serve_viewer(args.directories, host=access.host, port=options.port, credentials=credentials,
                                  insecure=access.insecure)
    token = "?access_token=TOKEN (a token of the token file)" if credentials.required else ""
    records = sum(s.manifest.records for s in viewer.sources)
    print(f"unisim view: open {server.url}/{token} ({records:,} records in {len(viewer.sources)} "
          f"director{'y' if len(viewer.sources) == 1 else 'ies'}); Ctrl-C stops", flush=True)
    try:
        serve_forever(server)
    finally:
        viewer.close()
    return 0
