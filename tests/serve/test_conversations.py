"""Conversations and messages in the store, on SQLite and PostgreSQL: always seen through their owner,
kept in order, searched by title and text, edited, answered again, finished and deleted."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from llama2.serve.conversations import NEW_TITLE, ConversationNotFoundError, Conversations, title_from
from llama2.serve.store import Message


@pytest.fixture
def people(store):
    alice = store.add_user("alice@example.com")
    bob = store.add_user("bob@example.com")
    return Conversations(store), alice.id, bob.id


def test_conversations_belong_to_their_owner(people):
    conversations, alice, bob = people
    mine = conversations.create(alice, model="m", system_prompt="Be brief.", temperature=0.2, max_tokens=9)
    conversations.add_message(alice, mine.id, "user", "hello")
    assert conversations.get(alice, mine.id).system_prompt == "Be brief."
    for call in (lambda: conversations.get(bob, mine.id), lambda: conversations.messages(bob, mine.id),
                 lambda: conversations.update(bob, mine.id, {"title": "x"}), lambda: conversations.delete(bob, mine.id),
                 lambda: conversations.add_message(bob, mine.id, "user", "x"),
                 lambda: conversations.drop_last_answer(bob, mine.id),
                 lambda: conversations.get(alice, mine.id + 1000)):
        with pytest.raises(ConversationNotFoundError):
            call()
    assert conversations.list(bob) == [] and [c.id for c in conversations.list(alice)] == [mine.id]
    assert len(conversations.messages(alice, mine.id)) == 1


def test_the_first_message_names_the_conversation(people):
    conversations, alice, _ = people
    conversation = conversations.create(alice, model="m")
    assert conversation.title == NEW_TITLE
    conversations.add_message(alice, conversation.id, "user", "\n  What is a llama?  \nIt is an animal.")
    conversations.add_message(alice, conversation.id, "user", "second message")
    assert conversations.get(alice, conversation.id).title == "What is a llama?"
    assert title_from("x" * 100) == "x" * 59 + "…" and title_from("   ") == NEW_TITLE


def test_answers_are_created_streaming_and_finished_in_place(people):
    conversations, alice, _ = people
    conversation = conversations.create(alice, model="m")
    question = conversations.add_message(alice, conversation.id, "user", "q")
    answer = conversations.add_message(alice, conversation.id, "assistant", "", model="m", status="streaming")
    later = conversations.add_message(alice, conversation.id, "user", "meanwhile")
    finished = conversations.finish_answer(alice, conversation.id, answer.id, "partial", "stopped")
    assert (finished.content, finished.status) == ("partial", "stopped")
    assert [m.id for m in conversations.messages(alice, conversation.id)] == [question.id, answer.id, later.id]
    conversations.delete(alice, conversation.id)
    assert conversations.finish_answer(alice, conversation.id, answer.id, "late", "done") is None


def test_edit_drops_the_later_turns_and_regenerate_the_last_answer(people):
    conversations, alice, _ = people
    cid = conversations.create(alice, model="m").id
    first = conversations.add_message(alice, cid, "user", "one")
    conversations.add_message(alice, cid, "assistant", "1", model="m")
    second = conversations.add_message(alice, cid, "user", "two")
    conversations.add_message(alice, cid, "assistant", "2", model="m")
    conversations.drop_last_answer(alice, cid)
    assert [m.content for m in conversations.messages(alice, cid)] == ["one", "1", "two"]
    conversations.drop_last_answer(alice, cid)  # the last turn is a question: nothing to drop
    assert len(conversations.messages(alice, cid)) == 3
    edited = conversations.edit_message(alice, cid, first.id, "ONE")
    assert edited.id == first.id and [m.content for m in conversations.messages(alice, cid)] == ["ONE"]
    with pytest.raises(ConversationNotFoundError):
        conversations.edit_message(alice, cid, second.id, "gone")


def test_search_matches_titles_and_text_with_like_wildcards_taken_literally(people):
    conversations, alice, bob = people
    a = conversations.create(alice, model="m", title="Trip to Peru")
    b = conversations.create(alice, model="m")
    conversations.add_message(alice, b.id, "user", "Discount: 50% off_peak")
    conversations.create(bob, model="m", title="Peru for bob")
    assert [c.id for c in conversations.list(alice, "peru")] == [a.id]
    assert [c.id for c in conversations.list(alice, "50%")] == [b.id]
    assert [c.id for c in conversations.list(alice, "F_P")] == [b.id]
    assert conversations.list(alice, "0%o") == [] and conversations.list(alice, "f%p") == []
    assert [c.id for c in conversations.list(alice)] == [b.id, a.id]  # last active first


def test_deleting_a_conversation_deletes_its_messages(people, store):
    conversations, alice, _ = people
    cid = conversations.create(alice, model="m").id
    for n in range(3):
        conversations.add_message(alice, cid, "user", str(n))
    conversations.delete(alice, cid)
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
    with pytest.raises(ConversationNotFoundError):
        conversations.get(alice, cid)
