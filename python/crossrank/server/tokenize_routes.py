"""vLLM's ``POST /tokenize`` and ``POST /detokenize`` with vLLM's request and response shapes.

* ``/tokenize``: ``{"prompt": str, "add_special_tokens": true, "return_token_strs": false}`` →
  ``{"count", "max_model_len", "tokens", "token_strs"}`` (``token_strs`` is ``null`` unless asked).
  The ids are the model tokenizer's, as vLLM's ``/tokenize`` gives them; they are not the scoring
  prompt (use ``usage.prompt_tokens`` of ``/score`` for that). vLLM's chat form (``messages``)
  needs a conversation template; a reranker's template renders query/document pairs, so that form
  is refused with 400 naming the prompt form.
* ``/detokenize``: ``{"tokens": [int, ...]}`` → ``{"prompt": str}``, special tokens kept, as
  vLLM's ``tokenizer.decode`` does.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict

from ..tokenization import TokenizationError, encode_user_texts
from .errors import APIError
from .protocol import drop_nulls, validate_request

__all__ = ["TokenizeRequest", "DetokenizeRequest", "parse_tokenize", "parse_detokenize", "tokenize", "detokenize"]


class TokenizeRequest(BaseModel):
    """vLLM's ``TokenizeCompletionRequest``."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Optional[str] = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    """vLLM's ``DetokenizeRequest``."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Optional[str] = None
    tokens: List[int]


def parse_tokenize(body: Dict[str, Any]) -> TokenizeRequest:
    """A ``/tokenize`` body; the chat form is refused with a 400 that says what to send."""
    body = drop_nulls(body)
    if "messages" in body and "prompt" not in body:
        raise APIError("the chat form of /tokenize (messages) needs a conversation template; this server's "
                       "template renders query/document pairs: send the text as prompt", 400, param="messages")
    return validate_request(TokenizeRequest, body)


def parse_detokenize(body: Dict[str, Any]) -> DetokenizeRequest:
    """A ``/detokenize`` body."""
    return validate_request(DetokenizeRequest, drop_nulls(body))


def tokenize(tokenizer: Any, req: TokenizeRequest, max_model_len: int) -> Dict[str, Any]:
    """vLLM's ``TokenizeResponse`` for ``req`` with a ``tokenizers.Tokenizer``."""
    try:
        req.prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError("prompt holds a lone surrogate escape; send valid Unicode text", 400, param="prompt") from None
    # encode_batch releases the GIL while it works (encode holds it): the event loop answers meanwhile.
    try:
        encoding = encode_user_texts(tokenizer, [req.prompt], add_special_tokens=req.add_special_tokens)[0]
    except TokenizationError as exc:
        raise APIError(f"the tokenizer failed on the prompt: the tokenizers library panicked ({exc.reason})", 400,
                       param="prompt") from None
    ids = list(encoding.ids)
    strs = [tokenizer.id_to_token(i) for i in ids] if req.return_token_strs else None
    return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": strs}


def detokenize(tokenizer: Any, req: DetokenizeRequest) -> Dict[str, Any]:
    """vLLM's ``DetokenizeResponse`` for ``req``."""
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    bad = next((t for t in req.tokens if not 0 <= t < size), None)
    if bad is not None:
        raise APIError(f"token id {bad} is outside the vocabulary (0 to {size - 1})", 400, param="tokens")
    return {"prompt": tokenizer.decode(req.tokens, skip_special_tokens=False)}
