async def test_the_whole_flow_smoke(stack):
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    assert registered["apiKey"].startswith("dak_")
