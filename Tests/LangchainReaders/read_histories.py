"""Reads conversations back with LangChain's stock history classes and compares them.

Run by LangchainReadersTests (Tests/HistorianIntegrationTests) with the Python of the virtual
environment that scripts/langchain-venv makes. Its argument is a JSON file:

    {"redis_url": ..., "postgres_url": ..., "recent_size": 10, "key_prefix": "",
     "conversations": {"<uuid>": [{"id", "type", "content", "tool_call_id"?}, ...]}}

with each conversation's messages in the contract's order. Every conversation is read with
`PostgresChatMessageHistory` (the `langchain_chat_history` view: all its messages) and with
`RedisChatMessageHistory` (`message_store:{id}`: its latest `recent_size`). Prints what it
checked; exits 1 with the differences when a reader returns anything else.
"""

import json
import sys

import psycopg
from langchain_community.chat_message_histories import RedisChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_postgres import PostgresChatMessageHistory

CLASSES = {"human": HumanMessage, "ai": AIMessage, "system": SystemMessage, "tool": ToolMessage}


def differences(reader, conversation, expected, messages):
    found = []
    if len(messages) != len(expected):
        found.append(f"{reader} {conversation}: {len(messages)} messages, expected {len(expected)}")
    for position, (want, got) in enumerate(zip(expected, messages)):
        where = f"{reader} {conversation} #{position}"
        if not isinstance(got, CLASSES[want["type"]]):
            found.append(f"{where}: {type(got).__name__}, expected {CLASSES[want['type']].__name__}")
        if got.type != want["type"]:
            found.append(f"{where}: type {got.type!r}, expected {want['type']!r}")
        if got.id != want["id"]:
            found.append(f"{where}: id {got.id}, expected {want['id']}")
        if got.content != want["content"]:
            found.append(f"{where}: content differs (message {want['id']})")
        if want["type"] == "tool" and got.tool_call_id != want["tool_call_id"]:
            found.append(f"{where}: tool_call_id {got.tool_call_id!r}, expected {want['tool_call_id']!r}")
    return found


def main():
    with open(sys.argv[1], encoding="utf-8") as file:
        request = json.load(file)
    size = request["recent_size"]
    problems = []
    read_postgres = read_redis = 0
    with psycopg.connect(request["postgres_url"]) as connection:
        for conversation, expected in request["conversations"].items():
            history = PostgresChatMessageHistory(
                "langchain_chat_history", conversation, sync_connection=connection
            )
            messages = history.messages
            read_postgres += len(messages)
            problems += differences("PostgresChatMessageHistory", conversation, expected, messages)

            history = RedisChatMessageHistory(
                session_id=conversation,
                url=request["redis_url"],
                key_prefix=request["key_prefix"] + "message_store:",
            )
            messages = history.messages
            read_redis += len(messages)
            problems += differences("RedisChatMessageHistory", conversation, expected[-size:], messages)
    print(
        f"{len(request['conversations'])} conversations: {read_postgres} messages read with "
        f"PostgresChatMessageHistory, {read_redis} with RedisChatMessageHistory"
    )
    if problems:
        print(f"{len(problems)} differences:", *problems[:40], sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
