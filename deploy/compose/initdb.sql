-- One database per part (docs/operations.md): the central server and each security server.
CREATE DATABASE central OWNER gateway;
CREATE DATABASE ss1 OWNER gateway;
CREATE DATABASE ss2 OWNER gateway;
