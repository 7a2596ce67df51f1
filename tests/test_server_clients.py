"""The official clients from PyPI against ``crossrank serve`` (issue 15): Cohere's SDK (v1 and v2
clients, sync and async), LangChain's ``CohereRerank`` in a ``ContextualCompressionRetriever``,
LlamaIndex's Cohere, Jina and TEI rerank postprocessors, and huggingface_hub's ``InferenceClient``.

Each client talks to a real server on 127.0.0.1 started as a subprocess (the random-weight Qwen3
fixture); the scores it hands back must equal the in-process ``CrossEncoder`` scores exactly. The
client versions are pinned in requirements-test.txt; a test whose client is not installed is
skipped with the package named.
"""
import asyncio
import json

import pytest

pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _fixtures import fixture_path  # noqa: E402
from crossrank import CrossEncoder  # noqa: E402
from test_server import QWEN3_NAME, QWEN3_OVERRIDES, as_floats, start_server  # noqa: E402,F401,F811

QUERY = "Which city is the capital of China?"
TEXTS = [
    "Beijing is the capital of the People's Republic of China.",
    "The Great Wall stretches for thousands of kilometres.",
    "Paris is the capital of France.",
    "Shanghai is the largest city in China by population.",
]
LONG_QUERY = "word " * 9000  # with the template, more than the model's 8192 tokens


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), hf_overrides=QWEN3_OVERRIDES, threads=2)


@pytest.fixture(scope="module")
def expected(model):
    return dict(enumerate(as_floats(model.score(QUERY, TEXTS))))


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(fixture_path("qwen3-tiny"), "--hf_overrides", json.dumps(QWEN3_OVERRIDES),
                        "--served-model-name", QWEN3_NAME, "--threads", "2")


def best_first(expected, n=None):
    order = sorted(expected, key=lambda i: -expected[i])
    return order if n is None else order[:n]


# -- Cohere's SDK ------------------------------------------------------------------------------


def test_cohere_v1_client_sync_and_async(server, expected, model):
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    client = cohere.Client(api_key="unused", base_url=server.url)
    # Arguments left as None go out as JSON null (top_n, return_documents, rank_fields, ...).
    resp = client.rerank(model=QWEN3_NAME, query=QUERY, documents=TEXTS, top_n=None, return_documents=None)
    assert {r.index: r.relevance_score for r in resp.results} == expected
    assert [r.index for r in resp.results] == best_first(expected)
    assert all(r.document.text == TEXTS[r.index] for r in resp.results)
    # Cohere v1 object documents with rank_fields
    docs = [{"title": f"doc {i}", "text": t} for i, t in enumerate(TEXTS)]
    resp = client.rerank(model=QWEN3_NAME, query=QUERY, documents=docs, rank_fields=["title", "text"], top_n=2,
                         return_documents=True)
    built = [f"title: doc {i}\ntext: {t}" for i, t in enumerate(TEXTS)]
    by_fields = dict(enumerate(as_floats(model.score(QUERY, built))))
    assert {r.index: r.relevance_score for r in resp.results} == {i: by_fields[i] for i in best_first(by_fields, 2)}
    assert all(r.document.text == TEXTS[r.index] for r in resp.results)

    async def run():
        async_client = cohere.AsyncClient(api_key="unused", base_url=server.url)
        return await async_client.rerank(model=QWEN3_NAME, query=QUERY, documents=TEXTS, top_n=2)

    resp = asyncio.run(run())
    assert {r.index: r.relevance_score for r in resp.results} == {i: expected[i] for i in best_first(expected, 2)}


def test_cohere_v2_client_sync_and_async(server, expected):
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    client = cohere.ClientV2(api_key="unused", base_url=server.url)
    resp = client.rerank(model=QWEN3_NAME, query=QUERY, documents=TEXTS, top_n=None, max_tokens_per_doc=None,
                         priority=5)
    assert {r.index: r.relevance_score for r in resp.results} == expected
    resp = client.rerank(model=QWEN3_NAME, query=QUERY, documents=TEXTS, top_n=3, max_tokens_per_doc=4096)
    assert [r.index for r in resp.results] == best_first(expected, 3)

    async def run():
        async_client = cohere.AsyncClientV2(api_key="unused", base_url=server.url)
        return await async_client.rerank(model=QWEN3_NAME, query=QUERY, documents=TEXTS)

    resp = asyncio.run(run())
    assert {r.index: r.relevance_score for r in resp.results} == expected


def test_cohere_client_sees_vllm_errors(server):
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    from cohere.core.api_error import ApiError

    client = cohere.ClientV2(api_key="unused", base_url=server.url)
    with pytest.raises(ApiError) as info:
        client.rerank(model=QWEN3_NAME, query=LONG_QUERY, documents=TEXTS)
    assert info.value.status_code == 400 and "Please reduce the length of the input prompt" in str(info.value.body)
    with pytest.raises(ApiError) as info:
        client.rerank(model="someone/else", query=QUERY, documents=TEXTS)
    assert info.value.status_code == 404
    with pytest.raises(ApiError) as info:
        client.rerank(model=QWEN3_NAME, query=QUERY, documents=TEXTS, max_tokens_per_doc=0)
    assert info.value.status_code == 400 and "must be a positive integer" in info.value.body["detail"]


# -- LangChain ---------------------------------------------------------------------------------


def test_langchain_cohere_rerank_in_a_contextual_compression_retriever(server, expected):
    pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    langchain_cohere = pytest.importorskip("langchain_cohere", reason="langchain-cohere is not installed")
    classic = pytest.importorskip("langchain_classic.retrievers", reason="langchain-classic is not installed")
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Fixed(BaseRetriever):
        docs: list

        def _get_relevant_documents(self, query, *, run_manager=None):
            return list(self.docs)

    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)]
    # CohereRerank always sends max_tokens_per_doc: null.
    reranker = langchain_cohere.CohereRerank(model=QWEN3_NAME, cohere_api_key="unused", base_url=server.url,
                                             top_n=2)
    retriever = classic.ContextualCompressionRetriever(base_compressor=reranker, base_retriever=Fixed(docs=docs))
    found = retriever.invoke(QUERY)
    assert [d.metadata["n"] for d in found] == best_first(expected, 2)
    assert [d.metadata["relevance_score"] for d in found] == [expected[i] for i in best_first(expected, 2)]


# -- LlamaIndex --------------------------------------------------------------------------------


def _nodes():
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]


def _check_nodes(out, expected, n):
    assert [int(x.node.node_id) for x in out] == best_first(expected, n)
    assert [x.score for x in out] == [expected[i] for i in best_first(expected, n)]


def test_llama_index_cohere_rerank(server, expected):
    mod = pytest.importorskip("llama_index.postprocessor.cohere_rerank",
                              reason="llama-index-postprocessor-cohere-rerank is not installed")
    reranker = mod.CohereRerank(api_key="unused", model=QWEN3_NAME, base_url=server.url, top_n=3)
    _check_nodes(reranker.postprocess_nodes(_nodes(), query_str=QUERY), expected, 3)


def test_llama_index_jina_rerank(server, expected):
    mod = pytest.importorskip("llama_index.postprocessor.jinaai_rerank",
                              reason="llama-index-postprocessor-jinaai-rerank is not installed")
    reranker = mod.JinaRerank(api_key="unused", model=QWEN3_NAME, base_url=server.url, top_n=3)
    _check_nodes(reranker.postprocess_nodes(_nodes(), query_str=QUERY), expected, 3)
    # Jina's client reports an error through the body's "detail"
    wrong = mod.JinaRerank(api_key="unused", model="someone/else", base_url=server.url, top_n=3)
    with pytest.raises(RuntimeError, match="does not exist"):
        wrong.postprocess_nodes(_nodes(), query_str=QUERY)


def test_llama_index_tei_rerank(server, expected):
    mod = pytest.importorskip("llama_index.postprocessor.tei_rerank",
                              reason="llama-index-postprocessor-tei-rerank is not installed")
    reranker = mod.TextEmbeddingInference(base_url=server.url, top_n=3)
    _check_nodes(reranker.postprocess_nodes(_nodes(), query_str=QUERY), expected, 3)
    # TEI auto-truncates an over-long query (truncate is not sent): an answer, not an error
    out = reranker.postprocess_nodes(_nodes(), query_str=LONG_QUERY)
    assert len(out) == 3 and len({x.score for x in out}) == 3


# -- huggingface_hub ---------------------------------------------------------------------------


def test_huggingface_hub_inference_client_endpoint_info_and_health(server):
    hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")
    client = hub.InferenceClient(model=server.url, provider="hf-inference")
    info = client.get_endpoint_info()
    assert info["model_id"] == QWEN3_NAME and info["max_input_length"] == 8192
    assert "reranker" in info["model_type"] and info["auto_truncate"] is True
    assert client.health_check() is True
