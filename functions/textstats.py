"""textstats: document statistics and keywords, the kind of pre-processing a pipeline runs
before a model sees the text.

Request: ``{"text": "..."}`` (also triggered by events on ``docs.uploaded``).
Answer: ``{"words": int, "sentences": int, "reading_seconds": int, "keywords": [[word, n], ...]}``.
"""

import re
from collections import Counter
from typing import Any

from runtime import InvalidPayload, function

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")

_STOPWORDS = """a about above after again against all am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours ourselves
out over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yourself yourselves"""


@function(name="textstats", subjects=["docs.uploaded"], timeout=10, concurrency=4)
class TextStats:
    def setup(self) -> None:
        # Loaded once per worker, not per event.
        self.stopwords = frozenset(_STOPWORDS.split())

    def __call__(self, event: Any) -> dict[str, Any]:
        text = event.get("text") if isinstance(event, dict) else None
        if not isinstance(text, str):
            raise InvalidPayload('textstats expects {"text": "<a string>"}')
        words = [w.lower() for w in _WORD.findall(text)]
        counts = Counter(w for w in words if w not in self.stopwords and len(w) > 2)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        return {
            "words": len(words),
            "sentences": len(_SENTENCE_END.findall(text)) or (1 if words else 0),
            "reading_seconds": round(len(words) / 238 * 60),  # average adult silent reading
            "keywords": [[w, n] for w, n in top],
        }
