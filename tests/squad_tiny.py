"""A tiny SQuAD-format data set written for the tests (invented facts, no third-party text)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ARTICLES = {
    "Harbour_Town": [
        "Harbour Town is a fishing port on the north coast. It was founded in 1723 by Danish traders. "
        "The town has about 14,000 inhabitants. Its lighthouse was built from red granite.",
        "The main industry of Harbour Town is herring fishing. A ferry leaves for the islands every morning "
        "at six. The annual regatta takes place in August. The mayor is Ellen Sand.",
    ],
    "Copper_Valley_Railway": [
        "The Copper Valley Railway is a narrow-gauge line of 42 kilometres. It opened in 1889 to carry copper "
        "ore to the smelter. Steam locomotives ran on it until 1961.",
        "Today the railway carries tourists in summer. Its oldest carriage dates from 1892. "
        "Volunteers restore the engines in a shed at Millford station.",
    ],
    "Blue_Lantern_Festival": [
        "The Blue Lantern Festival is held each winter in the old town. About 3,000 paper lanterns are lit "
        "on the first night. The festival began in 1975 as a student project.",
        "Visitors buy roasted chestnuts and hot cider at the stalls. A choir of 60 singers performs on the "
        "bridge. The festival ends with fireworks over the river.",
    ],
}

QUESTIONS = {
    "Harbour_Town": [
        ("When was Harbour Town founded?", "1723"),
        ("Who founded Harbour Town?", "Danish traders"),
        ("How many people live in Harbour Town?", "14,000"),
        ("What was the lighthouse of Harbour Town built from?", "red granite"),
        ("What is the main industry of Harbour Town?", "herring fishing"),
        ("When does the ferry leave for the islands?", "six"),
        ("When does the regatta take place?", "August"),
        ("Who is the mayor of Harbour Town?", "Ellen Sand"),
    ],
    "Copper_Valley_Railway": [
        ("How long is the Copper Valley Railway?", "42 kilometres"),
        ("When did the Copper Valley Railway open?", "1889"),
        ("What did the railway carry to the smelter?", "copper ore"),
        ("Until when did steam locomotives run on the Copper Valley Railway?", "1961"),
        ("Who does the Copper Valley Railway carry today?", "tourists"),
        ("How old is the oldest carriage?", "1892"),
        ("Where do volunteers restore the engines?", "Millford station"),
    ],
    "Blue_Lantern_Festival": [
        ("When is the Blue Lantern Festival held?", "each winter"),
        ("How many lanterns are lit on the first night?", "3,000"),
        ("When did the Blue Lantern Festival begin?", "1975"),
        ("What do visitors buy at the stalls?", "roasted chestnuts and hot cider"),
        ("How many singers are in the choir?", "60"),
        ("How does the Blue Lantern Festival end?", "fireworks over the river"),
    ],
}


def write_tiny_squad(folder: Path, *, gz: bool = True) -> Path:
    data = []
    n = 0
    for title, paragraphs in ARTICLES.items():
        paras = []
        for context in paragraphs:
            qas = []
            for question, answer in QUESTIONS[title]:
                start = context.find(answer)
                if start >= 0:
                    n += 1
                    qas.append({"id": f"q{n}", "question": question,
                                "answers": [{"answer_start": start, "text": answer}]})  # fmt: skip
            paras.append({"context": context, "qas": qas})
        data.append({"title": title, "paragraphs": paras})
    body = json.dumps({"version": "1.1", "data": data}).encode()
    path = folder / ("tiny-squad.json.gz" if gz else "tiny-squad.json")
    path.write_bytes(gzip.compress(body, mtime=0) if gz else body)
    return path
