"""crossrank.integrations.langchain: a document compressor in real langchain-core pipelines.

langchain-core has no ContextualCompressionRetriever (it lives in the `langchain` package), so
the pipelines here are what langchain-core offers: a BaseRetriever subclass and a vector store
retriever, each composed with the compressor in an LCEL chain, run with invoke, batch and ainvoke.
"""
import asyncio
import json
import threading
from pathlib import Path
from typing import List

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

import crossrank
from _fixtures import fixture_path
from crossrank import CrossEncoder
from crossrank.integrations.langchain import CrossrankRerank

DATA = Path(__file__).resolve().parent / "data" / "beir-mini"
QUERY = "how do vaccines train the immune system"


def corpus_documents() -> List[Document]:
    docs = []
    with open(DATA / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append(Document(page_content=f"{row['title']} {row['text']}".strip(), id=row["_id"],
                                 metadata={"source": "beir-mini", "title": row["title"]}))
    return docs


class KeywordRetriever(BaseRetriever):
    """Documents sharing the most words with the query (a first stage, as BM25 would be)."""

    documents: List[Document]
    k: int = 8

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> List[Document]:
        words = set(query.lower().split())
        overlap = [(len(words & set(d.page_content.lower().split())), i) for i, d in enumerate(self.documents)]
        best = sorted((o for o in overlap if o[0] > 0), key=lambda o: (-o[0], o[1]))[:self.k]
        return [self.documents[i] for _, i in best]


@pytest.fixture(scope="module")
def model():
    return CrossEncoder(fixture_path("qwen3-tiny"), template="qwen3-reranker", threads=1)


@pytest.fixture(scope="module")
def reranker(model):
    return CrossrankRerank(model=model, top_n=3)


def rerank_chain(retriever, reranker):
    def rerank(inputs):
        return reranker.compress_documents(inputs["documents"], inputs["query"])

    async def arerank(inputs):
        return await reranker.acompress_documents(inputs["documents"], inputs["query"])

    return RunnableParallel(documents=retriever, query=RunnablePassthrough()) | RunnableLambda(rerank, afunc=arerank)


def test_compressor_keeps_the_top_n_by_crossrank_score_with_the_score_in_metadata(model, reranker):
    docs = corpus_documents()[:12]
    before = [d.model_copy(deep=True) for d in docs]
    out = reranker.compress_documents(docs, QUERY)
    expected = model.rank(QUERY, [d.page_content for d in docs], top_k=3)
    assert [d.id for d in out] == [docs[r["corpus_id"]].id for r in expected]
    assert [d.metadata["relevance_score"] for d in out] == [r["score"] for r in expected]
    for d in out:
        original = next(o for o in docs if o.id == d.id)
        assert d.page_content == original.page_content
        assert {k: v for k, v in d.metadata.items() if k != "relevance_score"} == original.metadata
    assert docs == before  # the inputs are not modified


def test_top_n_none_keeps_every_document_and_a_threshold_drops_low_scores(model):
    docs = corpus_documents()[:10]
    all_docs = CrossrankRerank(model=model, top_n=None).compress_documents(docs, QUERY)
    scores = [d.metadata["relevance_score"] for d in all_docs]
    assert len(all_docs) == 10 and scores == sorted(scores, reverse=True)
    cut = scores[4]
    kept = CrossrankRerank(model=model, top_n=None, score_threshold=cut).compress_documents(docs, QUERY)
    assert [d.id for d in kept] == [d.id for d in all_docs if d.metadata["relevance_score"] >= cut]
    assert CrossrankRerank(model=model).compress_documents([], QUERY) == []


def test_lcel_chain_reranks_what_a_retriever_subclass_retrieves(reranker):
    retriever = KeywordRetriever(documents=corpus_documents())
    chain = rerank_chain(retriever, reranker)
    queries = [QUERY, "who built the great wall"]
    results = chain.batch(queries)
    for query, got in zip(queries, results):
        retrieved = retriever.invoke(query)
        assert len(retrieved) == 8
        assert [d.id for d in got] == [d.id for d in reranker.compress_documents(retrieved, query)]
        assert {d.id for d in got} <= {d.id for d in retrieved} and len(got) == 3
    assert [d.id for d in chain.invoke(queries[0])] == [d.id for d in results[0]]


def test_async_chain_gives_the_sync_result(reranker):
    chain = rerank_chain(KeywordRetriever(documents=corpus_documents()), reranker)
    got = asyncio.run(chain.ainvoke(QUERY))
    want = chain.invoke(QUERY)
    assert [(d.id, d.metadata["relevance_score"]) for d in got] == [(d.id, d.metadata["relevance_score"]) for d in want]


def test_vector_store_retriever_pipeline(reranker):
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    docs = corpus_documents()
    store.add_documents(docs, ids=[d.id for d in docs])
    chain = rerank_chain(store.as_retriever(search_kwargs={"k": 10}), reranker)
    out = chain.invoke(QUERY)
    assert len(out) == 3 and all(d.metadata["source"] == "beir-mini" for d in out)
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)


def test_a_model_name_is_loaded_and_bad_options_are_refused():
    named = CrossrankRerank(model=str(fixture_path("qwen3-tiny")),
                            model_kwargs={"template": "qwen3-reranker", "threads": 1}, top_n=2)
    assert isinstance(named.model, CrossEncoder)
    assert len(named.compress_documents(corpus_documents()[:4], QUERY)) == 2
    with pytest.raises(ValidationError):
        CrossrankRerank(model=named.model, top_k=2)  # LangChain's name is top_n
    with pytest.raises(ValidationError):
        CrossrankRerank(model=named.model, top_n=0)
    with pytest.raises((TypeError, ValidationError), match="CrossEncoder"):
        CrossrankRerank(model=object())


def test_cancelling_the_async_call_cancels_the_computation():
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    class Gated(CrossEncoder):
        """Holds the call at its start until the awaiting task has been cancelled."""

        def score(self, *args, cancel=None, **kwargs):
            self.token = cancel
            entered.set()
            release.wait(60)
            try:
                return super().score(*args, cancel=cancel, **kwargs)
            except BaseException as exc:
                self.raised = exc
                raise
            finally:
                finished.set()

    gated = Gated(fixture_path("qwen3-tiny"), template="qwen3-reranker", threads=1)
    reranker = CrossrankRerank(model=gated)

    async def run():
        task = asyncio.create_task(reranker.acompress_documents(corpus_documents(), QUERY))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(run())
    assert finished.wait(60)
    assert gated.token.cancelled
    assert isinstance(gated.raised, crossrank.Cancelled)
