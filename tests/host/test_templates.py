"""The template browser's view of our pack, through the running ComfyUI's own routes (no server: the route handlers
are called directly): every template in example_workflows/ is listed under the pack's folder name, its JSON is
served, and where that ComfyUI serves the folder's files (0.3.64, the installable fork) so is each thumbnail.

Current ComfyUI (0.38) serves custom-node templates through one handler that answers ``.json`` only; with its
``app/custom_node_manager.py`` laid over a 0.3.64 tree (see this folder's README) the test checks that contract:
the templates are listed and their JSON served, and the thumbnail request is the 404 the README describes."""

from __future__ import annotations

import asyncio
import importlib
import json
import pathlib
import types

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))


def _manager_module():
    for name in ("app.custom_node_manager", "comfy.app.custom_node_manager"):  # upstream; the installable fork
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("this ComfyUI has no custom_node_manager")


def test_the_template_browser_lists_and_serves_our_templates(pack):
    import comfy_host
    import folder_paths
    from aiohttp import web

    assert len(TEMPLATES) == 7
    custom_nodes = comfy_host.scratch_dir() / "custom_nodes"  # holds the pack as ComfyUI-AtomoVideo
    folder_paths.add_model_folder_path("custom_nodes", str(custom_nodes))
    manager = _manager_module()
    routes, app = web.RouteTableDef(), web.Application()
    manager.CustomNodeManager().add_routes(routes, app, [(comfy_host.PACK_NAME, str(custom_nodes / comfy_host.PACK_NAME))])
    handlers = {route.path: route.handler for route in routes if isinstance(route, web.RouteDef)}
    listing = json.loads(asyncio.run(handlers["/workflow_templates"](None)).body)
    assert sorted(listing[comfy_host.PACK_NAME]) == TEMPLATES

    static = [r for r in app.router.resources() if isinstance(r, web.StaticResource)
              and r.canonical == f"/api/workflow_templates/{comfy_host.PACK_NAME}"]
    if static:  # 0.3.64 and the fork: the whole folder, thumbnails included, at the URL the front end asks
        (resource,) = static
        folder = pathlib.Path(resource.get_info()["directory"])
        assert folder.resolve() == (REPO / "example_workflows").resolve()
        assert all((folder / f"{name}.jpg").is_file() and (folder / f"{name}.json").is_file() for name in TEMPLATES)
        return
    # current ComfyUI: one handler for /workflow_templates/{module_name}/{filename}, JSON only
    serve = handlers["/workflow_templates/{module_name}/{filename}"]

    def request(filename):
        return types.SimpleNamespace(match_info={"module_name": comfy_host.PACK_NAME, "filename": filename})

    for name in TEMPLATES:
        response = asyncio.run(serve(request(f"{name}.json")))
        assert pathlib.Path(response._path).resolve() == (REPO / "example_workflows" / f"{name}.json").resolve()
    with pytest.raises(web.HTTPNotFound):
        asyncio.run(serve(request(f"{TEMPLATES[0]}.jpg")))
