"""What `import housenum` gives a user."""


def test_the_package_exports_every_error_and_lists_read_number():
    import inspect

    import housenum
    from housenum import errors

    classes = {name for name, value in inspect.getmembers(errors, inspect.isclass) if issubclass(value, Exception)}
    assert classes <= set(housenum.__all__) and set(housenum.__all__) <= set(dir(housenum))
    assert callable(housenum.read_number)
