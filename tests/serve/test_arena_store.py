"""The arena's battles in the store, on SQLite and PostgreSQL: owner-scoped, apart from the chats, one
final vote per battle (also under a race), and the votes exported for `llama2 eval ladder` and
`llama2 eval agreement`, read back by their own readers."""

from __future__ import annotations

import csv
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from llama2.cli.main import main
from llama2.errors import ConfigError
from llama2.evaluate.agreement import agreement_report, read_ratings
from llama2.evaluate.ladder import bradley_terry, read_votes
from llama2.serve.arena_export import agreement_rows, export_votes, prompt_id
from llama2.serve.arena_store import Arena, BattleNotFoundError, VoteRefusedError
from llama2.serve.conversations import ConversationNotFoundError, Conversations
from llama2.serve.store import ArenaBattle


@pytest.fixture
def people(store):
    ids = [store.add_user(f"{name}@example.com").id for name in ("alice", "bob", "carol")]
    return Arena(store), *ids


def battle(arena: Arena, user: int, question: str, model_a: str, model_b: str, vote: str | None = None,
           statuses: tuple[str, str] = ("done", "done")) -> int:
    """A battle whose two answers ended with `statuses`, voted when `vote` is given."""
    b = arena.create(user, question, model_a, model_b)
    for side, status in zip("ab", statuses):
        answer = arena.start_answer(user, b.id, side)
        arena.finish_answer(user, b.id, answer.id, f"answer of {b.model(side)}", status)
    if vote is not None:
        arena.vote(user, b.id, vote)
    return b.id


def test_battles_belong_to_their_owner_and_stay_out_of_the_chat_list(store, people):
    arena, alice, bob, _ = people
    bid = battle(arena, alice, "Which is the tallest mountain?", "m1", "m2")
    got = arena.get(alice, bid)
    assert (got.title, got.model_a, got.model_b, got.vote) == ("Which is the tallest mountain?", "m1", "m2", None)
    assert got.question.content == "Which is the tallest mountain?"
    assert {side: a.content for side, a in got.answers.items()} == {"a": "answer of m1", "b": "answer of m2"}
    for call in (lambda: arena.get(bob, bid), lambda: arena.vote(bob, bid, "a"),
                 lambda: arena.start_answer(bob, bid, "a"), lambda: arena.get(alice, bid + 1000)):
        with pytest.raises(BattleNotFoundError):
            call()
    assert arena.finish_answer(bob, bid, got.answers["a"].id, "rewritten", "done") is None
    assert arena.get(alice, bid).answers["a"].content == "answer of m1"
    assert [b.id for b in arena.list(alice)] == [bid] and arena.list(bob) == []

    chats = Conversations(store)  # a battle is a conversation, but not a chat
    chat = chats.create(alice, model="m1")
    assert [c.id for c in chats.list(alice)] == [chat.id]
    for call in (lambda: chats.get(alice, bid), lambda: chats.messages(alice, bid),
                 lambda: chats.add_message(alice, bid, "user", "x"), lambda: chats.delete(alice, bid)):
        with pytest.raises(ConversationNotFoundError):
            call()
    with pytest.raises(BattleNotFoundError):
        arena.get(alice, chat.id)  # and a chat is no battle


def test_a_vote_is_final_and_needs_two_finished_answers(people):
    arena, alice, *_ = people
    fresh = arena.create(alice, "q", "m1", "m2")
    with pytest.raises(VoteRefusedError, match="both answers must finish"):
        arena.vote(alice, fresh.id, "a")
    answer = arena.start_answer(alice, fresh.id, "a")
    with pytest.raises(VoteRefusedError, match="answered already"):
        arena.start_answer(alice, fresh.id, "a")
    arena.finish_answer(alice, fresh.id, answer.id, "half", "stopped")
    with pytest.raises(VoteRefusedError, match="both answers must finish"):
        arena.vote(alice, fresh.id, "a")

    failed = battle(arena, alice, "q", "m1", "m2", statuses=("done", "error"))
    with pytest.raises(VoteRefusedError, match="cannot be judged"):
        arena.vote(alice, failed, "a")

    stopped = battle(arena, alice, "q", "m1", "m2", statuses=("stopped", "done"))  # stopped on purpose: judged
    voted = arena.vote(alice, stopped, "bad")
    assert voted.vote == "bad" and voted.voted_at is not None
    with pytest.raises(VoteRefusedError, match="final"):
        arena.vote(alice, stopped, "a")
    assert arena.get(alice, stopped).vote == "bad"


def test_two_votes_at_once_count_once(store, people):
    arena, alice, *_ = people
    bid = battle(arena, alice, "q", "m1", "m2")
    start, outcomes = threading.Barrier(4), []

    def vote(choice: str) -> None:
        start.wait()
        try:
            outcomes.append(arena.vote(alice, bid, choice).vote)
        except VoteRefusedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=vote, args=(choice,)) for choice in ("a", "b", "tie", "bad")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes).count("refused") == 3
    [winner] = [o for o in outcomes if o != "refused"]
    assert arena.get(alice, bid).vote == winner


def test_export_votes_is_read_by_the_ladder_and_the_agreement_tools(store, people, tmp_path):
    arena, alice, bob, carol = people
    # Three people on one prompt and pair, seen in either order; more battles for the ladder.
    battle(arena, alice, "What is 2+2?", "llama", "gpt", "a")        # llama better
    battle(arena, bob, "  what is 2+2? ", "gpt", "llama", "b")       # llama better (shown as B)
    battle(arena, carol, "What is 2+2?", "gpt", "llama", "tie")
    battle(arena, alice, "Name a prime.", "llama", "mistral", "b")
    battle(arena, bob, "Name a prime.", "mistral", "gpt", "bad")
    battle(arena, bob, "Name a prime.", "mistral", "llama", "a")
    battle(arena, carol, "A haiku, please.", "mistral", "llama", "a")
    battle(arena, carol, "Unvoted", "mistral", "llama")               # no vote: not exported

    out, agreement = tmp_path / "votes.csv", tmp_path / "agreement.csv"
    summary = export_votes(store, out, agreement=agreement)
    assert (summary.votes, summary.dropped, summary.items, summary.raters) == (7, 0, 2, 3)
    rows = list(csv.DictReader(out.open()))
    assert [(r["model_a"], r["model_b"], r["winner"]) for r in rows] == [
        ("llama", "gpt", "a"), ("gpt", "llama", "b"), ("gpt", "llama", "tie"), ("llama", "mistral", "b"),
        ("mistral", "gpt", "tie"), ("mistral", "llama", "a"), ("mistral", "llama", "a")]  # "both bad" is a tie
    assert rows[0]["voter"] == "alice@example.com" and rows[0]["prompt_id"] == rows[1]["prompt_id"] == prompt_id("What is 2+2?")

    votes = read_votes(out)  # the extra columns pass through the ladder's reader
    assert [(v.model_a, v.model_b, v.winner) for v in votes] == [(r["model_a"], r["model_b"], r["winner"]) for r in rows]
    ladder = bradley_terry(votes, n_bootstrap=0)
    ratings = {rating.model: rating for rating in ladder.ratings}
    assert set(ratings) == {"gpt", "llama", "mistral"} and ladder.n_votes == 7
    assert (ratings["llama"].wins, ratings["llama"].ties, ratings["llama"].losses) == (2, 1, 3)
    assert ratings["mistral"].rating > ratings["llama"].rating > ratings["gpt"].rating

    sums, primes = f"{prompt_id('What is 2+2?')}:gpt|llama", f"{prompt_id('Name a prime.')}:llama|mistral"
    expected = [(sums, "alice@example.com", "3"), (sums, "bob@example.com", "3"), (sums, "carol@example.com", "2"),
                (primes, "alice@example.com", "3"), (primes, "bob@example.com", "3")]
    assert sorted(tuple(r.values()) for r in csv.DictReader(agreement.open())) == sorted(expected)
    report = agreement_report(read_ratings(agreement), categories=["1", "2", "3"])
    assert (report.n_items, report.raters, report.n_ratings) == (2, ("alice@example.com", "bob@example.com",
                                                                     "carol@example.com"), 5)

    dropped = export_votes(store, out, drop_bad=True)
    assert (dropped.votes, dropped.dropped) == (6, 1) and len(read_votes(out)) == 6


def test_export_since_and_latest_vote_per_person(store, people, tmp_path):
    arena, alice, bob, _ = people
    old = battle(arena, alice, "Old question", "m1", "m2", "a")
    battle(arena, alice, "New question", "m1", "m2", "b")
    with store.writing() as session:
        session.execute(update(ArenaBattle).where(ArenaBattle.conversation_id == old)
                        .values(voted_at=datetime.now(timezone.utc) - timedelta(days=10)))
    since = datetime.now(timezone.utc) - timedelta(days=1)
    assert [r.question for r in arena.votes(since)] == ["New question"]
    assert len(arena.votes()) == 2

    # alice judged the same item twice: her latest vote counts; bob's makes it an item of two raters
    battle(arena, alice, "New question", "m2", "m1", "tie")
    battle(arena, bob, "New question", "m1", "m2", "a")
    rows = agreement_rows(arena.votes(since))
    assert [(rater, rating) for _, rater, rating in rows] == [("alice@example.com", 2), ("bob@example.com", 1)]
    with pytest.raises(ConfigError, match=r"\.csv"):
        export_votes(store, tmp_path / "votes.jsonl")


def test_admin_export_votes_command(store, store_url, people, tmp_path, capsys):
    arena, alice, bob, _ = people
    battle(arena, alice, "Hi", "m1", "m2", "a")
    battle(arena, bob, "Hi", "m2", "m1", "bad")
    out, agreement = tmp_path / "out" / "votes.csv", tmp_path / "agreement.csv"
    assert main(["admin", "export-votes", str(out), "--db", store_url, "--agreement", str(agreement),
                 "--since", "2000-01-01"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 2 votes to {out}" in printed and "llama2 eval ladder" in printed
    assert "wrote 2 ratings of 1 prompt-and-pair items by 2 people" in printed
    assert [(v.model_a, v.model_b, v.winner) for v in read_votes(out)] == [("m1", "m2", "a"), ("m2", "m1", "tie")]
    assert main(["admin", "export-votes", str(out), "--db", store_url, "--drop-bad"]) == 0
    assert 'wrote 1 vote (1 "both bad" left out)' in capsys.readouterr().out
    assert main(["admin", "export-votes", str(out), "--db", store_url, "--since", "yesterday"]) == 1
    assert "--since 'yesterday' is not a date" in capsys.readouterr().err
