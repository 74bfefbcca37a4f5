from tests.conftest import introspect


async def test_valid_token_is_active(texas, token):
    answer = await introspect(texas, token("idporten"))
    assert answer["active"] is True, answer
    assert answer["pid"] == "12345678901"
