"""The Pipes reader only hands over whole lines, however the writer splits them."""

import threading
import time

from resources.pipes_messages import tail_whole_lines


def test_a_line_written_in_two_parts_arrives_whole(tmp_path):
    path = tmp_path / "messages"
    path.write_text("")
    done = threading.Event()

    def writer():
        with path.open("a") as handle:
            handle.write('{"method": "log", "par')
            handle.flush()
            time.sleep(0.2)  # the reader polls meanwhile and sees half a line
            handle.write('ams": {}}\n{"method": "closed"}\n')
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    lines = list(tail_whole_lines(str(path), done.is_set))
    thread.join()
    assert lines == ['{"method": "log", "params": {}}\n', '{"method": "closed"}\n']


def test_a_final_line_without_newline_is_kept_once_the_writer_stops(tmp_path):
    path = tmp_path / "messages"
    path.write_text('{"a": 1}\n{"b": 2}')
    assert list(tail_whole_lines(str(path), lambda: True)) == ['{"a": 1}\n', '{"b": 2}']
