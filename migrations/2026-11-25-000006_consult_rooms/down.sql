DROP TABLE consult_relay;
DROP TABLE consult_rooms;
