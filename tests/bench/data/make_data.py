"""Regenerates the tiny official-format benchmark files in this folder (deterministic).

Run: ``python tests/bench/data/make_data.py``. Images are 8x8 solid-colour PNGs. Each set mirrors
its benchmark's official distribution format; a few rows are deliberately broken (missing image,
wrong answer count) so the adapters' counted handling is exercised.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(color))


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    red, blue = (255, 0, 0), (0, 0, 255)
    # MME: eval_tool/Your_Results/<subtask>.txt + MME_Benchmark_release_version/<subtask>/images
    d = HERE / "mme"
    (d / "eval_tool" / "Your_Results").mkdir(parents=True, exist_ok=True)
    (d / "eval_tool" / "Your_Results" / "existence.txt").write_text(
        "a.png\tIs there a red square? Please answer yes or no.\tYes\n"
        "a.png\tIs there a blue square? Please answer yes or no.\tNo\n"
        "b.png\tIs there a blue square? Please answer yes or no.\tYes\n"
        "b.png\tIs there a red square? Please answer yes or no.\tNo\n")
    (d / "eval_tool" / "Your_Results" / "code_reasoning.txt").write_text(
        "c.png\tWill this code print 1? Please answer yes or no.\tYes\n"
        "c.png\tWill this code print 2? Please answer yes or no.\tNo\n"
        "gone.png\tIs this missing? Please answer yes or no.\tYes\n"
        "gone.png\tIs this here? Please answer yes or no.\tNo\n")
    write_png(d / "MME_Benchmark_release_version" / "existence" / "images" / "a.png", red)
    write_png(d / "MME_Benchmark_release_version" / "existence" / "images" / "b.png", blue)
    write_png(d / "MME_Benchmark_release_version" / "code_reasoning" / "c.png", red)

    # MMBench: TSV, base64 images, circular copies (index + k*1e6) whose image cell references the base row
    rows = [
        ("0", base64.b64encode(png(red)).decode(), "", "What colour?", "red", "blue", "green", "yellow", "A", "attribute"),
        ("1000000", "0", "", "What colour?", "blue", "green", "yellow", "red", "D", "attribute"),
        ("1", base64.b64encode(png(blue)).decode(), "A hint.", "What shape?", "square", "circle", "", "", "A", "shape"),
        ("1000001", "1", "A hint.", "What shape?", "circle", "square", "", "", "B", "shape"),
        ("2", "!!not-base64!!" * 8, "", "Broken image?", "x", "y", "", "", "A", "shape"),
    ]
    header = "index\timage\thint\tquestion\tA\tB\tC\tD\tanswer\tcategory\tl2-category\n"
    (HERE / "mmbench").mkdir(exist_ok=True)
    (HERE / "mmbench" / "MMBench_DEV_EN.tsv").write_text(
        header + "".join("\t".join(r) + "\tperception\n" for r in rows))

    # SEED-Bench
    write_png(HERE / "seed" / "SEED-Bench-image" / "1.png", red)
    write_png(HERE / "seed" / "SEED-Bench-image" / "2.png", blue)
    (HERE / "seed" / "SEED-Bench.json").write_text(json.dumps({
        "question_type": {"Scene Understanding": 1, "Instance Identity": 2},
        "questions": [
            {"question_id": "101", "question": "Scene?", "choice_a": "beach", "choice_b": "room", "choice_c": "road",
             "choice_d": "sky", "answer": "A", "question_type_id": 1, "data_id": "1.png", "data_type": "image"},
            {"question_id": "102", "question": "What object?", "choice_a": "cat", "choice_b": "dog", "choice_c": "car",
             "choice_d": "cup", "answer": "C", "question_type_id": 2, "data_id": "2.png", "data_type": "image"},
            {"question_id": "103", "question": "Video?", "choice_a": "a", "choice_b": "b", "choice_c": "c",
             "choice_d": "d", "answer": "B", "question_type_id": 10, "data_id": "v.mp4", "data_type": "video"},
        ]}, indent=1))

    # MM-Vet
    write_png(HERE / "mmvet" / "images" / "v1.png", red)
    write_png(HERE / "mmvet" / "images" / "v2.png", blue)
    (HERE / "mmvet" / "mm-vet.json").write_text(json.dumps({
        "v1": {"imagename": "v1.png", "capability": ["rec", "ocr"], "question": "What colour is it?", "answer": "red"},
        "v2": {"imagename": "v2.png", "capability": ["rec"], "question": "UNPARSABLE colour?", "answer": "blue<OR>navy"},
        "v3": {"imagename": "missing.png", "capability": ["math"], "question": "1+1?", "answer": "2"},
    }, indent=1))

    # MMMU (hub fields exported to JSONL, image_1 as a relative path)
    write_png(HERE / "mmmu" / "images" / "m1.png", red)
    jsonl(HERE / "mmmu" / "mmmu_val.jsonl", [
        {"id": "validation_Art_1", "question": "<image 1> Which colour?", "options": "['red', 'blue', 'green', 'pink']",
         "answer": "A", "question_type": "multiple-choice", "image_1": "images/m1.png"},
        {"id": "validation_Math_1", "question": "<image 1> What is 2+2?", "options": "[]", "answer": "4",
         "question_type": "open", "image_1": "images/m1.png"},
        {"id": "validation_Math_2", "question": "<image 1> Pick one", "options": "['1', '2']", "answer": "B",
         "question_type": "multiple-choice", "image_1": "images/m1.png"},
    ])

    # TextVQA
    write_png(HERE / "textvqa" / "train_images" / "img1.jpg", red)  # PNG bytes, .jpg name: PIL sniffs content
    (HERE / "textvqa" / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": [
        {"question_id": 1, "image_id": "img1", "question": "what brand?", "ocr_tokens": ["nokia", "phone"],
         "answers": ["nokia"] * 7 + ["nokia phone"] * 2 + ["a nokia"]},
        {"question_id": 2, "image_id": "img1", "question": "how many?",
         "answers": ["2", "two", "2", "3", "2", "2", "two", "3", "3", "4"]},
        {"question_id": 3, "image_id": "img1", "question": "bad row", "answers": ["x", "y"]},
    ]}, indent=1))

    # GQA
    write_png(HERE / "gqa" / "images" / "n1.jpg", red)
    (HERE / "gqa" / "testdev_balanced_questions.json").write_text(json.dumps({
        "q1": {"imageId": "n1", "question": "What colour is the square?", "answer": "red",
               "types": {"structural": "query", "semantic": "attr", "detailed": "color"}},
        "q2": {"imageId": "n1", "question": "Is it blue?", "answer": "no",
               "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"}},
    }, indent=1))

    # EMT: class folders per dataset
    write_png(HERE / "emt" / "cifar10" / "cat" / "0.png", red)
    write_png(HERE / "emt" / "cifar10" / "dog" / "0.png", blue)
    write_png(HERE / "emt" / "mnist" / "7" / "0.png", blue)
    (HERE / "emt" / "mnist" / "classes.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")

    # MLLM-Bench + anchor answers
    write_png(HERE / "mllm_bench" / "images" / "p1.png", red)
    (HERE / "mllm_bench" / "questions.json").write_text(json.dumps([  # data/questions.json's layout
        {"id": 1, "image_path": "images/p1.png", "question": "Describe the image.",
         "meta": {"level": "Perception/Remembering", "capability": "General Object Recognition", "url": "",
                  "question type": "open-ended"}},
        {"id": 2, "image_path": "images/p1.png", "question": "Why is it red?",
         "meta": {"level": "Analyzing", "capability": "Reasoning", "url": "", "question type": "close-ended"}},
    ], indent=1))
    (HERE / "mllm_bench" / "anchor.json").write_text(json.dumps([  # data/anchor.json's layout
        {"unique_idx": 1, "image": "images/p1.png", "question": "Describe the image.", "gen_model_id": "llava-v1.5-13b",
         "prompt": "Describe the image.", "answer": "A square."},
        {"unique_idx": 2, "image": "images/p1.png", "question": "Why is it red?", "gen_model_id": "llava-v1.5-13b",
         "prompt": "Why is it red?", "answer": "Paint."},
    ], indent=1))

    # TouchStone TSV
    b64 = base64.b64encode(png(blue)).decode()
    (HERE / "touchstone").mkdir(exist_ok=True)
    (HERE / "touchstone" / "touchstone_20230831.tsv").write_text(
        "index\timage\tquestion\thuman_annotation\tgpt4_ha_answer\tcategory\ttask_name\n"
        f"0\t{b64}\tWhat is shown?\tA blue square on nothing.\tA blue square.\tBasic Descriptions\tdescribe\n"
        f"1\t{b64}\tWrite a poem.\tA blue square.\tBlue, so blue.\tLiterary Writing,Basic Descriptions\tpoem\n")

    # LLaVA-Bench (In-the-Wild)
    write_png(HERE / "llava_bench" / "images" / "001.png", red)
    jsonl(HERE / "llava_bench" / "questions.jsonl", [
        {"question_id": 0, "image": "001.png", "text": "What is this?", "category": "conv"},
        {"question_id": 1, "image": "001.png", "text": "Describe it in detail.", "category": "detail"},
    ])
    jsonl(HERE / "llava_bench" / "context.jsonl", [{"id": "001", "image": "001.png", "caption": ["A red square."]}])
    jsonl(HERE / "llava_bench" / "answers_gpt4.jsonl", [{"question_id": 0, "text": "A red square."},
                                                        {"question_id": 1, "text": "A small red square, 8 pixels."}])

    # Vicuna-80 + baseline answers (FastChat model_answer format)
    jsonl(HERE / "vicuna80" / "question.jsonl", [
        {"question_id": 1, "category": "generic", "turns": ["How can I improve my time management skills?"]},
        {"question_id": 2, "category": "coding", "turns": ["Write a function that reverses a string."]},
    ])
    jsonl(HERE / "vicuna80" / "baseline_answers.jsonl", [
        {"question_id": 1, "model_id": "llama-2-7b-chat", "choices": [{"index": 0, "turns": ["Make lists."]}]},
        {"question_id": 2, "model_id": "llama-2-7b-chat", "choices": [{"index": 0, "turns": ["s[::-1]"]}]},
    ])
    # the coding question is judged with pair-math-v1 against FastChat's GPT-4 reference answer
    jsonl(HERE / "vicuna80" / "reference_answer" / "gpt-4.jsonl", [
        {"question_id": 2, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["def rev(s): return s[::-1]"]}]},
    ])


if __name__ == "__main__":
    main()
