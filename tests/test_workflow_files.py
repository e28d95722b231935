"""The template files in example_workflows/ as files (pure JSON, no ComfyUI needed): no two nodes overlap as the front end
draws them, every link joins sockets that exist, every template has its note, thumbnail and API twin, and the file
names are the titles the README lists.

The template browser (ComfyUI front end 1.27) shows a custom node pack's template by its file name: the title is the
name, the description the name with ``-`` and ``_`` as spaces, the thumbnail ``NAME.jpg`` next to the file.

How the front end sizes a node (LiteGraph's ``computeSize``, measured in the browser on these files): a title bar of
30 px drawn above ``pos``, then 20 px per row of sockets, 24 px per widget (a multiline text box at least 54), 14 px
below the last widget (6 without widgets). A saved size smaller than that is enlarged when the graph loads, and Load
Image with a preview is made at least 314 px tall. So a layout is judged on the sizes the front end draws, not on the
saved ones: the old layout (Load CLIP Vision 10 px below a Load Image saved 160 px tall) only overlapped once the
front end grew Load Image to 314 px for its preview, over all 140 px of Load CLIP Vision
(``test_the_old_layout_overlaps``).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"
UI = sorted(WORKFLOWS.glob("*.json"))
IDS = [path.stem for path in UI]

TITLE_HEIGHT = 30
SLOT_HEIGHT, WIDGET_HEIGHT, TEXT_BOX_MIN, PADDING, PADDING_NO_WIDGETS = 20, 24, 54, 14, 6
LOAD_IMAGE_MIN_HEIGHT = 314  # the height the front end gives a smaller Load Image when its preview loads
LOAD_IMAGE_COMPUTED_HEIGHT = 326  # what its computeSize reports once it has a preview
MULTILINE = {"CLIPTextEncode": {"text"}, "AtomoPredictNextFrames": {"segment_prompts"}}
NOTES = {"Note", "MarkdownNote"}  # front-end-only nodes: in the UI file, not in the API file
MIN_GAP = 20  # between nodes, for the pack badge the front end draws above our nodes' titles
UNSAFE_IN_NAMES = re.compile(r'[\\/:*?"<>|#%]')  # special in a URL path (the front end does not encode) or on Windows
MAX_TITLE = 48  # the template card shows two lines of the title (~24 characters each) and cuts the rest


def _load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def front_end_height(node: dict) -> int:
    """The body height (below the title bar) the front end gives the node at least."""
    if node["type"] in NOTES:
        return 88
    rows = max(len(node["inputs"]), len(node["outputs"]))
    widgets = len(node["widgets_values"])
    text_boxes = len(MULTILINE.get(node["type"], ()))
    height = SLOT_HEIGHT * rows + WIDGET_HEIGHT * widgets + (TEXT_BOX_MIN - WIDGET_HEIGHT) * text_boxes
    height += PADDING if widgets else PADDING_NO_WIDGETS
    if node["type"] == "LoadImage":
        height = max(height, LOAD_IMAGE_MIN_HEIGHT)
    return height


def drawn_rect(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the node as drawn, title bar included."""
    x, y = node["pos"]
    width, height = node["size"][0], max(node["size"][1], front_end_height(node))
    return x, y - TITLE_HEIGHT, x + width, y + height


def overlaps(nodes: list[dict], gap: float = 0) -> list[tuple[int, int, float, float]]:
    """Pairs of nodes closer than ``gap`` (overlapping when gap is 0): (id, id, overlap width, overlap height)."""
    found = []
    for a, b in itertools.combinations(nodes, 2):
        ra, rb = drawn_rect(a), drawn_rect(b)
        width = min(ra[2], rb[2]) - max(ra[0], rb[0]) + gap
        height = min(ra[3], rb[3]) - max(ra[1], rb[1]) + gap
        if width > 0 and height > 0:
            found.append((a["id"], b["id"], width - gap, height - gap))
    return found


def test_there_is_a_template_for_each_use():
    assert len(UI) == 7
    api = {_load(path)["extra"]["info"]["api_workflow"] for path in UI}
    assert api == {f"api/{name}.json" for name in ("animatediff_text_to_video", "animatediff_long_text_to_video",
                                                   "animatediff_prompt_travel", "pia_image_to_video", "atomovideo_image_to_video",
                                                   "atomovideo_refine", "atomovideo_long_video")}
    assert {f"api/{p.name}" for p in (WORKFLOWS / "api").glob("*.json")} == api


# The old atomovideo_image_to_video.json (before the layout rule): Load Image saved 160 px tall, Load CLIP Vision
# 200 px below it, i.e. 10 px below its saved bottom edge once the 30 px title bar is counted.
OLD_LOAD_IMAGE = {"id": 5, "type": "LoadImage", "pos": [40, 238], "size": [340, 160], "inputs": [],
                  "outputs": [{"name": "IMAGE"}, {"name": "MASK"}], "widgets_values": ["example.png", "image"]}
OLD_CLIP_VISION = {"id": 6, "type": "CLIPVisionLoader", "pos": [40, 438], "size": [340, 110], "inputs": [],
                   "outputs": [{"name": "CLIP_VISION"}], "widgets_values": ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"]}


def test_the_old_layout_overlaps():
    """The check finds the reported bug: Load Image grows to 314 px, down to 552, and covers all of Load CLIP Vision
    (408 to 548, title bar included): 340 x 140 px of overlap, although the saved rectangles were 10 px apart."""
    assert overlaps([OLD_LOAD_IMAGE, OLD_CLIP_VISION]) == [(5, 6, 340, 140)]
    saved_bottom = OLD_LOAD_IMAGE["pos"][1] + OLD_LOAD_IMAGE["size"][1]
    assert OLD_CLIP_VISION["pos"][1] - TITLE_HEIGHT - saved_bottom == 10


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_no_two_nodes_overlap(path):
    nodes = _load(path)["nodes"]
    assert overlaps(nodes) == [], f"{path.name}: nodes overlap (id, id, width, height)"
    assert overlaps(nodes, gap=MIN_GAP) == [], f"{path.name}: nodes closer than {MIN_GAP} px"


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_nodes_are_saved_as_big_as_the_front_end_draws_them(path):
    """So the saved layout is the one the user sees: the front end grows nothing when the template loads."""
    for node in _load(path)["nodes"]:
        assert node["size"][1] >= front_end_height(node), f"{path.name}: node {node['id']} ({node['type']})"
        if node["type"] == "LoadImage":
            assert node["size"][1] >= LOAD_IMAGE_COMPUTED_HEIGHT
        assert node["size"][0] >= 200, f"{path.name}: node {node['id']} ({node['type']}) is too narrow"


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_the_graph_reads_left_to_right(path):
    """Every link runs right or down to a node of the same column, and the saved zoom still draws text."""
    workflow = _load(path)
    by_id = {node["id"]: node for node in workflow["nodes"]}
    for _, src, _, dst, _, _ in workflow["links"]:
        (sx, sy), (dx, dy) = by_id[src]["pos"], by_id[dst]["pos"]
        assert dx > sx or (dx == sx and dy > sy), f"{path.name}: link {src} -> {dst} runs backwards"
    assert 0.6 <= workflow["extra"]["ds"]["scale"] <= 1.0  # below ~0.57 the front end draws nodes without text


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_every_link_joins_existing_sockets(path):
    workflow = _load(path)
    by_id = {node["id"]: node for node in workflow["nodes"]}
    link_ids = set()
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        assert link_id not in link_ids
        link_ids.add(link_id)
        assert src in by_id and dst in by_id, f"{path.name}: link {link_id} names a missing node"
        source, target = by_id[src], by_id[dst]
        assert 0 <= src_slot < len(source["outputs"]) and 0 <= dst_slot < len(target["inputs"])
        assert link_id in source["outputs"][src_slot]["links"]
        assert target["inputs"][dst_slot]["link"] == link_id
        assert source["outputs"][src_slot]["type"] == target["inputs"][dst_slot]["type"] == link_type
    for node in workflow["nodes"]:  # and no socket names a link that is not there
        assert {s["link"] for s in node["inputs"]} - {None} <= link_ids
        assert {i for out in node["outputs"] for i in out["links"]} <= link_ids
    assert workflow["last_link_id"] == max(link_ids) and workflow["last_node_id"] == max(by_id)


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_the_api_twin_is_the_same_graph(path):
    workflow = _load(path)
    prompt = _load(WORKFLOWS / workflow["extra"]["info"]["api_workflow"])
    nodes = [node for node in workflow["nodes"] if node["type"] not in NOTES]
    assert {str(node["id"]): node["type"] for node in nodes} == {k: v["class_type"] for k, v in prompt.items()}
    by_id = {node["id"]: node for node in nodes}
    for _, src, src_slot, dst, dst_slot, _ in workflow["links"]:
        name = by_id[dst]["inputs"][dst_slot]["name"]
        assert prompt[str(dst)]["inputs"][name] == [str(src), src_slot]


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_the_note_names_the_files_and_their_folders(path):
    workflow = _load(path)
    notes = [node for node in workflow["nodes"] if node["type"] in NOTES]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    folders = {"CheckpointLoaderSimple": "checkpoints", "AtomoLoadMotionModule": "motion_modules",
               "CLIPVisionLoader": "clip_vision"}
    for node in workflow["nodes"]:
        if node["type"] in folders:
            assert f"{folders[node['type']]}/{node['widgets_values'][0]}" in text, f"{path.name}: {node['type']}"
        if node["type"] == "AtomoImageInjectConditioning":
            ipadapter = node["widgets_values"][7]
            assert ipadapter == "none" or f"ipadapter/{ipadapter}" in text


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_the_name_is_a_title(path):
    """The file name is what the template browser shows, and it goes unencoded into the thumbnail and file URLs."""
    title = path.stem
    assert not UNSAFE_IN_NAMES.search(title) and title == title.strip() and title.isascii()
    assert len(title) <= MAX_TITLE and " - " in title


@pytest.mark.parametrize("path", UI, ids=IDS)
def test_every_template_has_a_small_jpeg_thumbnail(path):
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"make {thumbnail.name}"
    data = thumbnail.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) < 100_000


def test_no_thumbnail_without_its_template():
    assert {p.stem for p in WORKFLOWS.glob("*.jpg")} == {p.stem for p in UI}


def test_the_readme_lists_the_templates_by_title():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Workflows", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert sorted(listed) == IDS


def test_save_video_inputs_suit_the_old_and_the_new_save_video():
    """ComfyUI 0.3.64's Save Video takes ``format`` and ``codec`` as plain combos; the newest (0.38) made ``format`` a
    dynamic combo whose chosen option needs its nested ``format.codec``, and kept ``codec`` as a hidden legacy input.
    Neither version can be run against the other here, so the contract is checked on the files: every API
    workflow's Save Video gives all three, the same codec twice, and nothing else a version could trip on."""
    api = sorted((WORKFLOWS / "api").glob("*.json"))
    saves = [node for path in api for node in json.loads(path.read_text()).values() if node["class_type"] == "SaveVideo"]
    assert len(saves) == len(api)
    for node in saves:
        inputs = node["inputs"]
        assert set(inputs) == {"video", "filename_prefix", "format", "codec", "format.codec"}
        assert inputs["format"] == "mp4" and inputs["codec"] == inputs["format.codec"] == "h264"
