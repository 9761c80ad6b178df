"""Where ALLaVA-3B's training data comes from and where each piece lands under the data root.

One table used three ways: ``train/prepare_data.py`` downloads from it (on a networked machine),
the dry run (``train/run.py --dry-run --declared-sizes``) plans from its record counts without the
files, and ``train/recipe_fixtures.py`` writes small look-alike files in the same layout.

Layout: every release's image paths are relative to one shared root, so all sources of the
recipe use ``image_root: .`` (the data root): ALLaVA-4V's records say ``allava_laion/images/...``,
ShareGPT4V's and LLaVA-1.5's say ``coco/train2017/...``, ``gqa/images/...``, ``sam/images/...``.

Record counts are the releases' own figures: the ALLaVA-4V dataset card (its current LAION and
VFLAN counts; the GitHub README has older ones: 505,588 / 202,552 / 203,065), the LLaVA-1.5 mix
(665,298: coco 364,100, vg 86,417, gqa 72,140, ocr_vqa 80,000, textvqa 21,953, text-only 40,688,
per the LLaVA maintainers), ShareGPT4V's data card ("102K") and OpenChat's GPT-4 subset (a cleaned
copy reports 6,144; ``exact=False`` marks the counts not taken from the file itself).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fetch:
    """One thing to download: a hub file, a URL, or a manual step (with where to get it)."""

    name: str
    dest: str  # where it lands, relative to the data root
    size: str  # as the host lists it; "" where not checked
    hub_repo: str | None = None  # a Hugging Face *dataset* repository
    hub_file: str | None = None  # file inside it; ``dest`` ends with it (the hub keeps the sub-folder)
    url: str | None = None
    unzip_to: str | None = None  # archives: folder (relative to the data root) to extract into
    manual: str | None = None  # why it cannot be fetched here, and where it comes from

    @property
    def origin(self) -> str:
        if self.hub_repo:
            return f"hf://datasets/{self.hub_repo}/{self.hub_file}"
        return self.url or f"manual: {self.manual}"


@dataclass(frozen=True)
class Annotation:
    """One source JSON of the recipe: its format, its declared size and the image folders it needs."""

    path: str  # relative to the data root; what the configs name
    format: str
    records: int
    fetch: Fetch
    image_dirs: tuple[str, ...] = ()
    exact: bool = True
    text_only: int = 0  # records without an image, in a file that has images (LLaVA-1.5's ShareGPT part)


ALLAVA = "FreedomIntelligence/ALLaVA-4V"

ANNOTATIONS: tuple[Annotation, ...] = (
    Annotation("allava_laion/ALLaVA-Caption-LAION-4V.json", "allava", 468_670,
               Fetch("allava-caption-laion", "allava_laion/ALLaVA-Caption-LAION-4V.json", "720 MB",
                     ALLAVA, "allava_laion/ALLaVA-Caption-LAION-4V.json"), ("allava_laion/images",)),
    Annotation("allava_laion/ALLaVA-Instruct-LAION-4V.json", "allava", 468_670,
               Fetch("allava-instruct-laion", "allava_laion/ALLaVA-Instruct-LAION-4V.json", "592 MB",
                     ALLAVA, "allava_laion/ALLaVA-Instruct-LAION-4V.json"), ("allava_laion/images",)),
    Annotation("allava_vflan/ALLaVA-Caption-VFLAN-4V.json", "allava", 194_977,
               Fetch("allava-caption-vflan", "allava_vflan/ALLaVA-Caption-VFLAN-4V.json", "230 MB",
                     ALLAVA, "allava_vflan/ALLaVA-Caption-VFLAN-4V.json"), ("allava_vflan/images/images_191task_1k",)),
    Annotation("allava_vflan/ALLaVA-Instruct-VFLAN-4V.json", "allava", 194_254,
               Fetch("allava-instruct-vflan", "allava_vflan/ALLaVA-Instruct-VFLAN-4V.json", "238 MB",
                     ALLAVA, "allava_vflan/ALLaVA-Instruct-VFLAN-4V.json"), ("allava_vflan/images/images_191task_1k",)),
    Annotation("allava_text/Evol-Instruct-GPT4-Turbo-143K.json", "allava", 143_000,
               Fetch("evol-instruct", "allava_text/Evol-Instruct-GPT4-Turbo-143K.json", "375 MB",
                     ALLAVA, "allava_text/Evol-Instruct-GPT4-Turbo-143K.json")),
    Annotation("openchat/sharegpt_gpt4.json", "openchat", 6_144,
               Fetch("openchat-sharegpt4", "openchat/sharegpt_gpt4.json", "119 MB",
                     "openchat/openchat_sharegpt4_dataset", "sharegpt_gpt4.json"), exact=False),
    Annotation("sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json", "sharegpt4v", 102_025,
               Fetch("sharegpt4v-cap100k", "sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json", "134 MB",
                     "Lin-Chen/ShareGPT4V", "sharegpt4v_instruct_gpt4-vision_cap100k.json"),
               ("coco/train2017", "sam/images", "llava/llava_pretrain/images", "wikiart/images",
                "share_textvqa/images", "web-celebrity/images", "web-landmark/images"), exact=False),
    Annotation("llava/llava_v1_5_mix665k.json", "llava_mix", 665_298,
               Fetch("llava-v1.5-mix665k", "llava/llava_v1_5_mix665k.json", "1.03 GB",
                     "liuhaotian/LLaVA-Instruct-150K", "llava_v1_5_mix665k.json"),
               ("coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K", "vg/VG_100K_2"),
               text_only=40_688),
)

IMAGES: tuple[Fetch, ...] = (
    Fetch("allava-laion-images", "allava_laion/images.zip", "",
          ALLAVA, "allava_laion/images.zip", unzip_to="allava_laion"),
    Fetch("vision-flan-images", "allava_vflan/images/image_191-task_1k.zip", "",
          "Vision-Flan/vision-flan_191-task_1k", "image_191-task_1k.zip", unzip_to="allava_vflan/images"),
    Fetch("llava-pretrain-images", "llava/llava_pretrain/images.zip", "",
          "liuhaotian/LLaVA-Pretrain", "images.zip", unzip_to="llava/llava_pretrain/images"),
    Fetch("coco-train2017", "coco/train2017.zip", "18 GB", url="http://images.cocodataset.org/zips/train2017.zip",
          unzip_to="coco"),
    Fetch("gqa-images", "gqa/images.zip", "20 GB", url="https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip",
          unzip_to="gqa"),
    Fetch("textvqa-train-images", "textvqa/train_val_images.zip", "7 GB",
          url="https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip", unzip_to="textvqa"),
    Fetch("vg-part1", "vg/images.zip", "9 GB", url="https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip",
          unzip_to="vg"),
    Fetch("vg-part2", "vg/images2.zip", "5 GB", url="https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip",
          unzip_to="vg"),
    Fetch("ocr-vqa-images", "ocr_vqa/images", "~80k files",
          manual="LLaVA-1.5's OCR-VQA script (loadDataset.py + dataset.json, linked from LLaVA's README) "
                 "downloading from Amazon; save every file as .jpg; a few hundred of the 80,000 no longer "
                 "download (LLaVA issue #1618) and are counted as missing images"),
    Fetch("sam-images", "sam/images", "tars 000000-000050",
          manual="Meta's Segment Anything downloads (licence form: ai.meta.com/datasets/segment-anything-downloads); "
                 "ShareGPT4V uses sa_000000..sa_000050; extract the .jpg files into sam/images"),
    Fetch("sharegpt4v-web-images", "wikiart/images, share_textvqa/images, web-celebrity/images, web-landmark/images",
          "", manual="ShareGPT4V's web-data zip (Google Drive, linked from ShareGPT4V's docs/Data.md; "
                          "academic use only); extract into the data root"),
)


def annotation(path: str) -> Annotation | None:
    """The catalog entry of a config source path, or None for data the catalog does not know."""
    for a in ANNOTATIONS:
        if a.path == path:
            return a
    return None
